// Writes a seed corpus of small valid GGUF files into the folder argv[1].
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "gguf.hpp"

using namespace hcllama;
using W = gguf_writer;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  auto save = [&](const std::string& name, const std::vector<std::uint8_t>& b) {
    std::ofstream o(dir + "/" + name, std::ios::binary);
    o.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  };
  {
    W w;
    w.add("general.architecture", W::string("llama"));
    w.add("u8", W::u8(1)); w.add("i8", W::i8(-1)); w.add("u16", W::u16(2)); w.add("i16", W::i16(-2));
    w.add("u32", W::u32(3)); w.add("i32", W::i32(-3)); w.add("u64", W::u64(4)); w.add("i64", W::i64(-4));
    w.add("f32", W::f32(0.5f)); w.add("f64", W::f64(0.25)); w.add("b", W::boolean(true));
    w.add("arr", W::array(gguf_type::string, {W::string("x"), W::string("yz")}));
    w.add("nested", W::array(gguf_type::array, {W::array(gguf_type::i32, {W::i32(7)})}));
    save("metadata.gguf", w.bytes());
  }
  const ggml_type types[] = {ggml_type::f32, ggml_type::f16, ggml_type::bf16, ggml_type::q4_0,
                             ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1, ggml_type::q8_0};
  for (auto t : types) {
    for (std::uint32_t version : {2u, 3u}) {
      W w(version, version == 2 ? 32 : 16);
      const std::size_t n = 64;
      std::vector<std::uint8_t> data(n / block_size(t) * type_size(t));
      for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 37 + 11);
      w.add_tensor("t", t, {32, 2}, data);
      w.add_tensor("u", ggml_type::f32, {3}, std::vector<std::uint8_t>(12, 0x3F));
      save(std::string("tensor_") + to_string(t) + "_v" + std::to_string(version) + ".gguf", w.bytes());
    }
  }
  return 0;
}
