// BsonDocument and BsonValue: owning RAII wrappers of libbson's bson_t and bson_value_t, the
// currency of the client-side encryption layer (kmsProviders documents, data key documents,
// values to encrypt and their ciphertexts). Copyable and movable; a moved-from document is
// empty ({}), never dangling.
#pragma once

#include <bson/bson.h>
#include "azkms/export.h"
#include "azkms/span.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace azkms {

class AZKMS_EXPORT BsonDocument {
 public:
  BsonDocument();  // {}
  // Deep copy of `doc` (which must not be null).
  explicit BsonDocument(const bson_t* doc);
  // Copies `size` bytes of BSON; throws ErrorCode::kMalformedResponse when they are not a
  // valid BSON document.
  static BsonDocument from_bytes(Span<std::uint8_t> bytes);
  // Parses (relaxed or canonical) Extended JSON; throws ErrorCode::kConfiguration with
  // libbson's reason when it is not a JSON object.
  static BsonDocument from_json(std::string_view json);

  BsonDocument(const BsonDocument& other);
  BsonDocument(BsonDocument&& other) noexcept;
  BsonDocument& operator=(const BsonDocument& other);
  BsonDocument& operator=(BsonDocument&& other) noexcept;
  ~BsonDocument();

  [[nodiscard]] const bson_t* get() const noexcept { return doc_; }
  [[nodiscard]] bson_t* get() noexcept { return doc_; }
  [[nodiscard]] Span<std::uint8_t> bytes() const noexcept;
  [[nodiscard]] bool empty() const noexcept { return bson_empty(doc_); }
  // Overwrites the bytes with zeros and leaves the document empty: for documents that held
  // secrets (kmsProviders with tokens).
  void wipe() noexcept;

  // Canonical Extended JSON: lossless (types survive a round trip), used for files.
  [[nodiscard]] std::string canonical_json() const;
  // Relaxed Extended JSON: for people.
  [[nodiscard]] std::string relaxed_json() const;

  friend bool operator==(const BsonDocument& a, const BsonDocument& b) noexcept {
    return bson_equal(a.doc_, b.doc_);
  }

 private:
  bson_t* doc_;
};

class AZKMS_EXPORT BsonValue {
 public:
  BsonValue() noexcept;  // BSON_TYPE_EOD: no value
  // Deep copy.
  explicit BsonValue(const bson_value_t& value);
  static BsonValue utf8(std::string_view text);
  static BsonValue int64(std::int64_t number);

  BsonValue(const BsonValue& other);
  BsonValue(BsonValue&& other) noexcept;
  BsonValue& operator=(const BsonValue& other);
  BsonValue& operator=(BsonValue&& other) noexcept;
  ~BsonValue();

  [[nodiscard]] const bson_value_t& get() const noexcept { return value_; }
  [[nodiscard]] bson_type_t type() const noexcept { return value_.value_type; }
  [[nodiscard]] bool is_utf8() const noexcept { return value_.value_type == BSON_TYPE_UTF8; }
  // The string; throws ErrorCode::kCrypt when the value is not a string.
  [[nodiscard]] std::string as_utf8() const;
  // Binary subtype, or -1 when the value is not binary (ciphertexts are subtype 6).
  [[nodiscard]] int binary_subtype() const noexcept;
  [[nodiscard]] Span<std::uint8_t> binary_bytes() const noexcept;
  // The value as relaxed Extended JSON, e.g. "\"hello\"" or {"$binary": ...}.
  [[nodiscard]] std::string relaxed_json() const;

  friend AZKMS_EXPORT bool operator==(const BsonValue& a, const BsonValue& b);

 private:
  bson_value_t value_;
};

}  // namespace azkms
