#pragma once
//! \file
//! A non-owning, non-allocating reference to a callable (internal).

#include <memory>
#include <type_traits>
#include <utility>

namespace heterocache {
inline namespace v1 {
namespace detail {

template <class Signature>
class function_ref;

//! Calls a callable it does not own; the callable must outlive the reference.
template <class R, class... Args>
class function_ref<R(Args...)> {
public:
    template <class F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, function_ref> && std::is_invocable_r_v<R, F&, Args...>)
    function_ref(F&& f) noexcept  // NOLINT(google-explicit-constructor): implicit by design, like std::function_ref
        : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
          call_([](void* object, Args... args) -> R {
              return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<Args>(args)...);
          }) {}

    R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

private:
    void* object_;
    R (*call_)(void*, Args...);
};

}  // namespace detail
}  // namespace v1
}  // namespace heterocache
