#include "azkms/secret.hpp"

#include <openssl/crypto.h>

#include <ostream>

namespace azkms {

Secret::Secret(Secret&& other) noexcept : value_(std::move(other.value_)) { other.wipe(); }

Secret& Secret::operator=(const Secret& other) {
  if (this != &other) {
    wipe();
    value_ = other.value_;
  }
  return *this;
}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    wipe();
    value_ = std::move(other.value_);
    other.wipe();
  }
  return *this;
}

Secret::~Secret() { wipe(); }

void Secret::wipe() noexcept {
  // Wipe the whole buffer (capacity, not size), so short-string storage is covered too.
  if (value_.capacity() > 0) OPENSSL_cleanse(value_.data(), value_.capacity());
  value_.clear();
}

std::string Secret::redacted() const {
  return "[redacted: " + std::to_string(value_.size()) + " bytes]";
}

std::ostream& operator<<(std::ostream& os, const Secret& secret) { return os << secret.redacted(); }

}  // namespace azkms
