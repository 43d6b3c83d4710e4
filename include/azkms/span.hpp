// Span<T>: a read-only view of contiguous elements (bytes of a BSON document, a list of
// provider names), for the API taking or returning one. The public headers ask only C++17 of
// their users, so the API cannot use std::span; and the library is built as C++20, so the API
// cannot be std::span in one language mode and something else in the other. Span is the same
// type in both: it is made from anything with data() and size() (std::vector, std::array,
// std::string, a C array, and std::span itself), and being a contiguous range of its own, a
// std::span is made from it in C++20.
#pragma once

#include <cstddef>
#include <iterator>
#include <type_traits>
#include <utility>

namespace azkms {

template <typename T>
class Span {
  // Containers whose data() points to T (const or not), never to something convertible.
  template <typename Container>
  using EnableIfContiguousOfT = std::enable_if_t<std::is_same_v<
      std::remove_cv_t<std::remove_pointer_t<decltype(std::data(std::declval<Container&>()))>>, T>>;

 public:
  constexpr Span() noexcept = default;
  constexpr Span(const T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  template <typename Container, typename = EnableIfContiguousOfT<const Container>>
  constexpr Span(const Container& container) noexcept  // NOLINT(google-explicit-constructor)
      : data_(std::data(container)), size_(std::size(container)) {}

  [[nodiscard]] constexpr const T* data() const noexcept { return data_; }
  [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }
  [[nodiscard]] constexpr bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] constexpr const T* begin() const noexcept { return data_; }
  [[nodiscard]] constexpr const T* end() const noexcept { return data_ + size_; }
  [[nodiscard]] constexpr const T& operator[](std::size_t index) const noexcept {
    return data_[index];
  }

 private:
  const T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace azkms
