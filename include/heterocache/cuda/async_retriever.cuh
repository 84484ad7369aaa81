#pragma once
//! \file
//! The CUDA asynchronous retriever: refreshes run on a copy stream beside the engine's compute stream, and
//! a layer's wait point is a stream-to-stream dependency, never a host synchronisation. It has the shape of a
//! `Retriever` (concepts/retriever.hpp: `bind`, `submit`, `wait`) but does not model it, since its
//! `device_storage` is not yet a `StorageTier` (see cuda/device_storage.cuh).

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "heterocache/concepts/retriever.hpp"
#include "heterocache/cuda/config.cuh"
#include "heterocache/cuda/device_storage.cuh"

namespace heterocache {
inline namespace v1 {
namespace cuda {

//! How a refresh moves its tokens cold -> hot.
enum class transfer_path : std::uint8_t {
    staged,     //!< the host gathers into pinned staging, then one `cudaMemcpyAsync` per run of consecutive
                //!< hot slots (DMA engine)
    zero_copy,  //!< a kernel on the copy stream reads the pinned cold tier in place (no host copy of K/V)
};

//! Refreshes of a `device_storage`. `submit(request)` first orders the copy stream after everything the
//! engine has enqueued on the compute stream so far (so slots still being read by this step's attention
//! are not overwritten), then prepares the request in one of two pinned staging buffers and enqueues its
//! transfer on the copy stream, and records layer `request.layer`'s event. `wait(layer)` makes the compute
//! stream wait for that event (`cudaStreamWaitEvent`): the host never blocks, and the kernels of the other
//! layers overlap the transfer. The host blocks only when a staging buffer is needed again while the
//! transfer of two submits ago still reads it (double buffering).
//! Thread rules: `submit` and `wait` from one engine thread.
template <KvElement Element = float>
class async_retriever {
public:
    //! `compute` is the engine's stream, the one `wait` orders; `nullptr` is the legacy default stream.
    explicit async_retriever(cudaStream_t compute = nullptr, transfer_path path = transfer_path::staged)
        : compute_(compute), path_(path) {}
    async_retriever(const async_retriever&) = delete;
    async_retriever& operator=(const async_retriever&) = delete;
    //! Waits for every enqueued transfer, so no staging buffer is freed while a copy reads it.
    ~async_retriever() {
        if (copy_) (void)cudaStreamSynchronize(copy_->get());
    }

    //! Allocates the copy stream, two staging buffers of `plan.max_request_tokens` tokens and one event per
    //! layer (`plan.max_pending` does not change the buffers: a third submit waits for the first's transfer).
    //! Throws `cuda_error` when an allocation fails.
    void bind(device_storage<Element>& storage, const retriever_plan& plan) {
        if (copy_) copy_->synchronize();
        storage_ = &storage;
        copy_ = std::make_unique<stream>();
        compute_mark_ = std::make_unique<event>();
        for (slot& s : staging_) {
            s.buffer = refresh_staging<Element>(plan.max_request_tokens, storage.head_dim());
            s.done = std::make_unique<event>();
            s.in_flight = false;
        }
        layer_ready_.clear();
        for (index_t layer = 0; layer < plan.layers; ++layer) layer_ready_.push_back(std::make_unique<event>());
        submitted_ = 0;
    }

    //! Enqueues the refresh on the copy stream. Everything the request points at (its rows, pages and
    //! positions) is read before this returns. Throws `shape_error` when the request exceeds the plan,
    //! `cuda_error` on a CUDA failure.
    void submit(const refresh_request& request) {
        ::heterocache::detail::require<shape_error>(request.layer >= 0 && request.layer < static_cast<index_t>(layer_ready_.size()),
                                                    "request.layer", request.layer, "[0, layers)");
        slot& s = staging_[submitted_++ % staging_.size()];
        if (s.in_flight) s.done->synchronize();  // the transfer of two submits ago still reads this buffer
        compute_mark_->record(compute_);
        check(cudaStreamWaitEvent(copy_->get(), compute_mark_->get(), 0), "cudaStreamWaitEvent(copy after compute)");
        if (path_ == transfer_path::staged) {
            storage_->stage(request, s.buffer);
            storage_->copy_staged(request, s.buffer, copy_->get());
        } else {
            storage_->gather_zero_copy(request, s.buffer, copy_->get());
        }
        s.done->record(copy_->get());
        s.in_flight = true;
        layer_ready_[static_cast<std::size_t>(request.layer)]->record(copy_->get());
    }

    //! Orders the compute stream after every refresh submitted for `layer`. Returns at once.
    void wait(index_t layer) {
        const auto l = static_cast<std::size_t>(layer);
        if (l >= layer_ready_.size()) return;  // never bound: nothing was submitted
        check(cudaStreamWaitEvent(compute_, layer_ready_[l]->get(), 0), "cudaStreamWaitEvent(compute after layer)");
    }

    //! Blocks the host until every submitted transfer is complete (tests, shutdown).
    void synchronize() {
        if (copy_) copy_->synchronize();
    }
    [[nodiscard]] cudaStream_t copy_stream() const noexcept { return copy_ ? copy_->get() : nullptr; }
    [[nodiscard]] cudaStream_t compute_stream() const noexcept { return compute_; }
    [[nodiscard]] transfer_path path() const noexcept { return path_; }

private:
    struct slot {
        refresh_staging<Element> buffer;
        std::unique_ptr<event> done;
        bool in_flight = false;
    };

    cudaStream_t compute_;
    transfer_path path_;
    device_storage<Element>* storage_ = nullptr;
    std::unique_ptr<stream> copy_;
    std::unique_ptr<event> compute_mark_;
    std::array<slot, 2> staging_;
    std::vector<std::unique_ptr<event>> layer_ready_;
    std::uint64_t submitted_ = 0;
};

}  // namespace cuda
}  // namespace v1
}  // namespace heterocache
