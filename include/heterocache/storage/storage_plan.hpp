#pragma once
//! \file
//! What a storage tier is planned with, the memory it is bound to, the bulk requests it serves and the byte
//! counters it may keep (DESIGN.md section 3.1, "Storage").

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "heterocache/attention/paged_selection.hpp"
#include "heterocache/types.hpp"

namespace heterocache {
inline namespace v1 {

//! Everything a storage tier sizes its memory by; nothing is sized after `bind`.
struct storage_plan {
    model_shape shape;
    index_t sequences = 0;           //!< sequence slots; rows of a layer are `seq * kv_heads + head`
    index_t max_positions = 0;       //!< cold-tier positions per row: the longest prompt plus its decode tokens
    index_t page_size = 16;          //!< tokens per hot page
    std::vector<index_t> hot_pages;  //!< pages of each layer's hot pool, `layers` entries
    bool cold_aliased = false;       //!< the cold tier reads the engine's tensor instead of a copy (`bind`'s `alias`)

    [[nodiscard]] index_t rows_per_layer() const noexcept { return sequences * shape.kv_heads; }
};

//! Bytes a storage tier needs, by the memory that holds them (`bytes_required`): `hot` in the storage's
//! memory space (device memory for a device tier), `cold` in host-accessible memory (pinned for a device
//! tier; 0 when the cold tier aliases the engine's tensor). Each region starts on an `alignment` boundary.
struct storage_bytes {
    std::size_t hot = 0;
    std::size_t cold = 0;
    static constexpr std::size_t alignment = 256;
};

//! Memory an engine hands a storage tier at `bind` (CUB's two-phase temporary storage): spans of at least
//! `storage_bytes` each, aligned to `storage_bytes::alignment`. Empty spans ask the tier to allocate its own.
struct storage_memory {
    std::span<std::byte> hot;
    std::span<std::byte> cold;
};

//! Memory the library allocates for those that do not hand any in: two buffers of the sizes asked for.
class storage_buffers {
public:
    storage_buffers() = default;
    //! Allocates `bytes.hot` and `bytes.cold` bytes (aligned to `storage_bytes::alignment`).
    explicit storage_buffers(const storage_bytes& bytes)
        : hot_(bytes.hot + storage_bytes::alignment), cold_(bytes.cold + storage_bytes::alignment) {}
    //! The buffers, aligned.
    [[nodiscard]] storage_memory memory() noexcept { return {aligned(hot_), aligned(cold_)}; }

private:
    static std::span<std::byte> aligned(std::vector<std::byte>& buffer) noexcept {
        if (buffer.empty()) return {};
        const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
        const std::size_t skip = (storage_bytes::alignment - address % storage_bytes::alignment) % storage_bytes::alignment;
        return {buffer.data() + skip, buffer.size() - storage_bytes::alignment};
    }
    std::vector<std::byte> hot_, cold_;
};

//! The new token of one row, as `append` takes it: key and value at `token` of the engine's tensor (for the
//! row's sequence and head), stored at `position` of the row in the cold tier and in hot slot `slot`.
struct append_entry {
    index_t row = 0;
    index_t token = 0;
    index_t position = 0;
    index_t slot = 0;
};

//! One row of a refill: the row's tokens `[first_token, first_token + positions.size())` on its `pages` (token
//! `k` in slot `pages[k / page_size] * page_size + k % page_size`) receive the cold tokens at `positions`.
//! Runs of consecutive positions that land in consecutive slots are copied in bulk.
struct refresh_row {
    index_t row = 0;
    const page_index_t* pages = nullptr;
    index_t first_token = 0;
    std::span<const index_t> positions;
};

//! A refill of some rows of one layer. The memory it points at stays valid until the retriever's
//! `wait(layer)` returns.
struct refresh_request {
    index_t layer = 0;
    std::span<const refresh_row> rows;

    [[nodiscard]] index_t tokens() const noexcept {
        index_t n = 0;
        for (const auto& r : rows) n += static_cast<index_t>(r.positions.size());
        return n;
    }
};

//! Bytes moved by a storage tier since `bind` (keys and values together, counted as stored in the tier they
//! land in: a 16-bit hot tier counts 2 bytes per element).
struct transfer_counters {
    std::uint64_t written_to_hot = 0;   //!< bytes written into the hot tier from the engine (prefill selections, append)
    std::uint64_t written_to_cold = 0;  //!< bytes copied into the cold tier (0 when it aliases the engine's tensor)
    std::uint64_t retrieved = 0;        //!< bytes moved cold -> hot (refreshes, and the compaction online profiling ends with)
};

}  // namespace v1
}  // namespace heterocache
