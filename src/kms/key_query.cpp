// DataKeyId and KeyQuery: the shared vocabulary of both key vault implementations.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "azkms/error.hpp"
#include "azkms/key_vault.hpp"

namespace azkms {
namespace {

constexpr std::uint8_t kUuidSubtype = BSON_SUBTYPE_UUID;

Error filter_error(const std::string& what) {
  return Error(ErrorCode::kKeyVault,
               "unexpected key vault filter from libmongocrypt (" + what +
                   "); expected {$or: [{_id: {$in: [...]}}, {keyAltNames: {$in: [...]}}]}");
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_uuid_binary(const bson_iter_t& iter) {
  if (!BSON_ITER_HOLDS_BINARY(&iter)) return false;
  bson_subtype_t subtype;
  std::uint32_t length = 0;
  const std::uint8_t* data = nullptr;
  bson_iter_binary(&iter, &subtype, &length, &data);
  return subtype == kUuidSubtype && length == 16;
}

DataKeyId read_uuid(const bson_iter_t& iter) {
  bson_subtype_t subtype;
  std::uint32_t length = 0;
  const std::uint8_t* data = nullptr;
  bson_iter_binary(&iter, &subtype, &length, &data);
  DataKeyId id;
  std::memcpy(id.bytes.data(), data, id.bytes.size());
  return id;
}

// Reads {"$in": [...]} under `field`, calling `each` for every element.
template <typename Each>
void read_in_list(bson_iter_t& clause, const char* field, Each&& each) {
  bson_iter_t in_doc;
  bson_iter_t in_array;
  if (!BSON_ITER_HOLDS_DOCUMENT(&clause) || !bson_iter_recurse(&clause, &in_doc) ||
      !bson_iter_find(&in_doc, "$in") || !BSON_ITER_HOLDS_ARRAY(&in_doc) ||
      !bson_iter_recurse(&in_doc, &in_array)) {
    throw filter_error(std::string(field) + " without an $in array");
  }
  while (bson_iter_next(&in_array)) each(in_array);
}

}  // namespace

std::string DataKeyId::to_string() const {
  char text[37];
  std::snprintf(text, sizeof text,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", bytes[0],
                bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8],
                bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]);
  return text;
}

std::optional<DataKeyId> DataKeyId::parse(std::string_view text) {
  if (text.size() != 36) return std::nullopt;
  DataKeyId id;
  std::size_t out = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    const int high = hex_value(text[i]);
    const int low = hex_value(text[i + 1]);
    if (high < 0 || low < 0) return std::nullopt;
    id.bytes[out++] = static_cast<std::uint8_t>(high * 16 + low);
    i += 2;
  }
  return id;
}

DataKeyId DataKeyId::of(const BsonDocument& key_document) {
  bson_iter_t iter;
  if (!bson_iter_init_find(&iter, key_document.get(), "_id") || !is_uuid_binary(iter)) {
    throw Error(ErrorCode::kKeyVault, "data key document without a UUID _id");
  }
  return read_uuid(iter);
}

KeyQuery KeyQuery::from_filter(const BsonDocument& filter) {
  KeyQuery query;
  bson_iter_t top;
  bson_iter_t clauses;
  if (!bson_iter_init_find(&top, filter.get(), "$or") || !BSON_ITER_HOLDS_ARRAY(&top) ||
      !bson_iter_recurse(&top, &clauses)) {
    throw filter_error("no $or array");
  }
  while (bson_iter_next(&clauses)) {
    bson_iter_t clause;
    if (!BSON_ITER_HOLDS_DOCUMENT(&clauses) || !bson_iter_recurse(&clauses, &clause)) {
      throw filter_error("an $or element is not a document");
    }
    while (bson_iter_next(&clause)) {
      const std::string_view key = bson_iter_key(&clause);
      if (key == "_id") {
        read_in_list(clause, "_id", [&](const bson_iter_t& element) {
          if (!is_uuid_binary(element)) throw filter_error("an _id that is not a UUID");
          query.ids.push_back(read_uuid(element));
        });
      } else if (key == "keyAltNames") {
        read_in_list(clause, "keyAltNames", [&](const bson_iter_t& element) {
          if (!BSON_ITER_HOLDS_UTF8(&element)) throw filter_error("a keyAltName not a string");
          query.alt_names.emplace_back(bson_iter_utf8(&element, nullptr));
        });
      } else {
        throw filter_error("unknown field " + std::string(key));
      }
    }
  }
  return query;
}

BsonDocument KeyQuery::to_filter() const {
  bson_t filter = BSON_INITIALIZER;
  bson_t or_array;
  bson_t clause;
  bson_t in_doc;
  bson_t list;
  BSON_APPEND_ARRAY_BEGIN(&filter, "$or", &or_array);

  BSON_APPEND_DOCUMENT_BEGIN(&or_array, "0", &clause);
  BSON_APPEND_DOCUMENT_BEGIN(&clause, "_id", &in_doc);
  BSON_APPEND_ARRAY_BEGIN(&in_doc, "$in", &list);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::string index = std::to_string(i);
    bson_append_binary(&list, index.c_str(), -1, BSON_SUBTYPE_UUID, ids[i].bytes.data(),
                       ids[i].bytes.size());
  }
  bson_append_array_end(&in_doc, &list);
  bson_append_document_end(&clause, &in_doc);
  bson_append_document_end(&or_array, &clause);

  BSON_APPEND_DOCUMENT_BEGIN(&or_array, "1", &clause);
  BSON_APPEND_DOCUMENT_BEGIN(&clause, "keyAltNames", &in_doc);
  BSON_APPEND_ARRAY_BEGIN(&in_doc, "$in", &list);
  for (std::size_t i = 0; i < alt_names.size(); ++i) {
    const std::string index = std::to_string(i);
    bson_append_utf8(&list, index.c_str(), -1, alt_names[i].data(),
                     static_cast<int>(alt_names[i].size()));
  }
  bson_append_array_end(&in_doc, &list);
  bson_append_document_end(&clause, &in_doc);
  bson_append_document_end(&or_array, &clause);

  bson_append_array_end(&filter, &or_array);
  BsonDocument result(&filter);
  bson_destroy(&filter);
  return result;
}

bool KeyQuery::matches(const BsonDocument& key_document) const {
  bson_iter_t iter;
  if (bson_iter_init_find(&iter, key_document.get(), "_id") && is_uuid_binary(iter)) {
    const DataKeyId id = read_uuid(iter);
    if (std::find(ids.begin(), ids.end(), id) != ids.end()) return true;
  }
  bson_iter_t names;
  if (!alt_names.empty() && bson_iter_init_find(&iter, key_document.get(), "keyAltNames") &&
      BSON_ITER_HOLDS_ARRAY(&iter) && bson_iter_recurse(&iter, &names)) {
    while (bson_iter_next(&names)) {
      if (!BSON_ITER_HOLDS_UTF8(&names)) continue;
      const std::string_view name = bson_iter_utf8(&names, nullptr);
      if (std::find(alt_names.begin(), alt_names.end(), name) != alt_names.end()) return true;
    }
  }
  return false;
}

}  // namespace azkms
