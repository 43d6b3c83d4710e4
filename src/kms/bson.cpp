#include "azkms/bson.hpp"

#include <cstring>
#include <memory>

#include "azkms/error.hpp"

namespace azkms {
namespace {

struct BsonFree {
  void operator()(char* p) const noexcept { bson_free(p); }
};

// bson_value_copy does not know BSON_TYPE_EOD, the "no value" state of a BsonValue.
void copy_value(const bson_value_t& from, bson_value_t& to) {
  to = bson_value_t{};
  if (from.value_type == BSON_TYPE_EOD) {
    to.value_type = BSON_TYPE_EOD;
  } else {
    bson_value_copy(&from, &to);
  }
}

std::string take_string(char* text) {
  std::unique_ptr<char, BsonFree> owned(text);
  return owned ? std::string(owned.get()) : std::string();
}

}  // namespace

BsonDocument::BsonDocument() : doc_(bson_new()) {}

BsonDocument::BsonDocument(const bson_t* doc) : doc_(bson_copy(doc)) {}

BsonDocument BsonDocument::from_bytes(Span<std::uint8_t> bytes) {
  bson_t view;
  if (!bson_init_static(&view, bytes.data(), bytes.size()) ||
      !bson_validate(&view, BSON_VALIDATE_NONE, nullptr)) {
    throw Error(ErrorCode::kMalformedResponse,
                "not a valid BSON document (" + std::to_string(bytes.size()) + " bytes)");
  }
  return BsonDocument(&view);
}

BsonDocument BsonDocument::from_json(std::string_view json) {
  bson_error_t error;
  bson_t* doc = bson_new_from_json(reinterpret_cast<const std::uint8_t*>(json.data()),
                                   static_cast<ssize_t>(json.size()), &error);
  if (doc == nullptr) {
    throw Error(ErrorCode::kConfiguration,
                std::string("not an Extended JSON document: ") + error.message);
  }
  BsonDocument result;
  bson_destroy(result.doc_);
  result.doc_ = doc;
  return result;
}

BsonDocument::BsonDocument(const BsonDocument& other) : doc_(bson_copy(other.doc_)) {}

BsonDocument::BsonDocument(BsonDocument&& other) noexcept : doc_(bson_new()) {
  std::swap(doc_, other.doc_);
}

BsonDocument& BsonDocument::operator=(const BsonDocument& other) {
  if (this != &other) {
    bson_t* copy = bson_copy(other.doc_);
    bson_destroy(doc_);
    doc_ = copy;
  }
  return *this;
}

BsonDocument& BsonDocument::operator=(BsonDocument&& other) noexcept {
  std::swap(doc_, other.doc_);
  return *this;
}

BsonDocument::~BsonDocument() { bson_destroy(doc_); }

void BsonDocument::wipe() noexcept {
  std::memset(const_cast<std::uint8_t*>(bson_get_data(doc_)), 0, doc_->len);
  bson_destroy(doc_);
  doc_ = bson_new();
}

Span<std::uint8_t> BsonDocument::bytes() const noexcept { return {bson_get_data(doc_), doc_->len}; }

std::string BsonDocument::canonical_json() const {
  return take_string(bson_as_canonical_extended_json(doc_, nullptr));
}

std::string BsonDocument::relaxed_json() const {
  return take_string(bson_as_relaxed_extended_json(doc_, nullptr));
}

BsonValue::BsonValue() noexcept : value_{} { value_.value_type = BSON_TYPE_EOD; }

BsonValue::BsonValue(const bson_value_t& value) : value_{} { copy_value(value, value_); }

BsonValue BsonValue::utf8(std::string_view text) {
  bson_value_t view{};
  view.value_type = BSON_TYPE_UTF8;
  view.value.v_utf8.str = const_cast<char*>(text.data());
  view.value.v_utf8.len = static_cast<std::uint32_t>(text.size());
  return BsonValue(view);
}

BsonValue BsonValue::int64(std::int64_t number) {
  bson_value_t view{};
  view.value_type = BSON_TYPE_INT64;
  view.value.v_int64 = number;
  return BsonValue(view);
}

BsonValue::BsonValue(const BsonValue& other) : value_{} { copy_value(other.value_, value_); }

BsonValue::BsonValue(BsonValue&& other) noexcept : value_(other.value_) {
  other.value_ = bson_value_t{};
  other.value_.value_type = BSON_TYPE_EOD;
}

BsonValue& BsonValue::operator=(const BsonValue& other) {
  if (this != &other) {
    bson_value_t copy{};
    copy_value(other.value_, copy);
    if (value_.value_type != BSON_TYPE_EOD) bson_value_destroy(&value_);
    value_ = copy;
  }
  return *this;
}

BsonValue& BsonValue::operator=(BsonValue&& other) noexcept {
  std::swap(value_, other.value_);
  return *this;
}

BsonValue::~BsonValue() {
  if (value_.value_type != BSON_TYPE_EOD) bson_value_destroy(&value_);
}

std::string BsonValue::as_utf8() const {
  if (value_.value_type != BSON_TYPE_UTF8) {
    throw Error(ErrorCode::kCrypt, "the value is not a string");
  }
  return {value_.value.v_utf8.str, value_.value.v_utf8.len};
}

int BsonValue::binary_subtype() const noexcept {
  return value_.value_type == BSON_TYPE_BINARY ? static_cast<int>(value_.value.v_binary.subtype)
                                               : -1;
}

Span<std::uint8_t> BsonValue::binary_bytes() const noexcept {
  if (value_.value_type != BSON_TYPE_BINARY) return {};
  return {value_.value.v_binary.data, value_.value.v_binary.data_len};
}

std::string BsonValue::relaxed_json() const {
  if (value_.value_type == BSON_TYPE_EOD) return "";
  bson_t doc = BSON_INITIALIZER;
  bson_append_value(&doc, "v", 1, &value_);
  std::string json = take_string(bson_as_relaxed_extended_json(&doc, nullptr));
  bson_destroy(&doc);
  // {"v" : <value> } -> <value>
  const auto colon = json.find(':');
  const auto close = json.rfind('}');
  if (colon == std::string::npos || close == std::string::npos || close <= colon) return json;
  std::string inner = json.substr(colon + 1, close - colon - 1);
  const auto first = inner.find_first_not_of(' ');
  const auto last = inner.find_last_not_of(' ');
  return first == std::string::npos ? inner : inner.substr(first, last - first + 1);
}

bool operator==(const BsonValue& a, const BsonValue& b) {
  if (a.value_.value_type != b.value_.value_type) return false;
  if (a.value_.value_type == BSON_TYPE_EOD) return true;
  bson_t da = BSON_INITIALIZER;
  bson_t db = BSON_INITIALIZER;
  bson_append_value(&da, "v", 1, &a.value_);
  bson_append_value(&db, "v", 1, &b.value_);
  const bool equal = bson_equal(&da, &db);
  bson_destroy(&da);
  bson_destroy(&db);
  return equal;
}

}  // namespace azkms
