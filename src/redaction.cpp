#include "redaction.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <nlohmann/json.hpp>

#include "azkms/secret.hpp"
#include "encoding.hpp"
#include "text.hpp"

namespace azkms {
namespace {

constexpr std::string_view kRedacted = "[redacted]";
constexpr std::size_t kWindow = 8;
constexpr std::size_t kShortest = 4;

thread_local RedactionScope* t_innermost = nullptr;

std::uint64_t window_at(const char* data) {
  std::uint64_t value = 0;
  std::memcpy(&value, data, sizeof(value));
  return value;
}

// ---- the forms an endpoint may echo a secret in ----------------------------------------

// The inside of a JSON string holding `text` (without the quotes).
std::string json_escaped(std::string_view text, bool ascii_only) {
  const std::string quoted =
      nlohmann::json(std::string(text))
          .dump(-1, ' ', ascii_only, nlohmann::json::error_handler_t::replace);
  return quoted.size() >= 2 ? quoted.substr(1, quoted.size() - 2) : std::string();
}

// Step 2: what a control character or non-ASCII byte becomes.
char printable(char c) {
  const auto byte = static_cast<unsigned char>(c);
  if (c == '\n' || c == '\r' || c == '\t') return ' ';
  if (byte < 0x20 || byte >= 0x7f) return '?';
  return c;
}

std::string printable_text(std::string text) {
  for (char& c : text) c = printable(c);
  return text;
}

// ---- credentials recognised by their shape -------------------------------------------

// Key names whose values are credentials, in JSON bodies and in form bodies.
constexpr std::array<std::string_view, 6> kSecretKeys{"access_token",  "refresh_token",
                                                      "id_token",      "client_assertion",
                                                      "client_secret", "accesstoken"};

std::size_t find_icase(std::string_view text, std::string_view needle, std::size_t from) {
  if (needle.empty() || text.size() < needle.size()) return std::string_view::npos;
  for (std::size_t i = from; i + needle.size() <= text.size(); ++i) {
    if (iequals(text.substr(i, needle.size()), needle)) return i;
  }
  return std::string_view::npos;
}

// Length of a quote at text[i]: 1 for " or ', 2 for an escaped \" (a key or value quoted
// inside another JSON string, as in an error description), 0 for none.
std::size_t quote_length(std::string_view text, std::size_t i) {
  if (i >= text.size()) return 0;
  if (text[i] == '"' || text[i] == '\'') return 1;
  if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == '"') return 2;
  return 0;
}

std::size_t skip_blanks(std::string_view text, std::size_t i) {
  while (i < text.size() &&
         (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r')) {
    ++i;
  }
  return i;
}

void mark_range(std::vector<bool>& marks, std::size_t begin, std::size_t end) {
  std::fill(marks.begin() + static_cast<std::ptrdiff_t>(begin),
            marks.begin() + static_cast<std::ptrdiff_t>(std::min(end, marks.size())), true);
}

// Marks the value that follows the credential key at `pos` (key:value or key=value), if any.
// Works on broken JSON and form bodies too: no parser involved. Marking, rather than
// replacing, leaves every position valid, so a key name used as another key's value
// ("access_token":"access_token":"...") cannot hide the value that follows it.
void mark_value_after(std::string_view text, std::size_t pos, std::size_t key_size,
                      std::vector<bool>& marks) {
  std::size_t i = pos + key_size;
  if (i < text.size() && text[i] == '_') return;  // client_assertion_type is not a secret
  i = skip_blanks(text, i + quote_length(text, i));
  if (i >= text.size() || (text[i] != ':' && text[i] != '=')) return;
  i = skip_blanks(text, i + 1);
  if (const std::size_t quote = quote_length(text, i); quote > 0) {
    const std::size_t begin = i + quote;
    std::size_t end = begin;
    // An escaped quote ends an escaped value; a plain one ends a plain value.
    while (end < text.size()) {
      if (quote == 2 && text.substr(end, 2) == "\\\"") break;
      if (quote == 1 && text[end] == text[i]) break;
      end += (quote == 1 && text[end] == '\\') ? 2 : 1;
    }
    mark_range(marks, begin, end);
    return;
  }
  // An unquoted value (a form body, text) ends where no token character could be.
  constexpr std::string_view kValueEnd = ",}&;<>\"'";
  std::size_t end = i;
  while (end < text.size() && kValueEnd.find(text[end]) == std::string_view::npos &&
         !std::isspace(static_cast<unsigned char>(text[end]))) {
    ++end;
  }
  mark_range(marks, i, end);
}

void mark_credential_values(std::string_view text, std::vector<bool>& marks) {
  for (auto key : kSecretKeys) {
    for (std::size_t pos = find_icase(text, key, 0); pos != std::string_view::npos;
         pos = find_icase(text, key, pos + 1)) {
      mark_value_after(text, pos, key.size(), marks);
    }
  }
}

bool token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
}

// JSON Web Tokens anywhere (an endpoint echoing an assertion in an error description).
void mark_json_web_tokens(std::string_view text, std::vector<bool>& marks) {
  std::size_t pos = 0;
  while ((pos = text.find("eyJ", pos)) != std::string_view::npos) {
    std::size_t end = pos;
    while (end < text.size() && token_char(text[end])) ++end;
    if (end - pos >= 20) mark_range(marks, pos, end);
    pos = std::max(end, pos + 1);
  }
}

// The user:password of scheme://user:password@host (a misconfigured endpoint variable).
void mark_url_credentials(std::string_view text, std::vector<bool>& marks) {
  constexpr std::string_view kAuthorityEnd = "/?#\"'<> \t\r\n\\";
  std::size_t pos = 0;
  while ((pos = text.find("://", pos)) != std::string_view::npos) {
    const std::size_t begin = pos + 3;
    const std::size_t end = std::min(text.find_first_of(kAuthorityEnd, begin), text.size());
    const std::size_t at = text.substr(begin, end - begin).rfind('@');
    if (at != std::string_view::npos) mark_range(marks, begin, begin + at);
    pos = begin;
  }
}

// ---- step 1 ----------------------------------------------------------------------------

std::string replace_marked(std::string_view text, const std::vector<bool>& marks) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (!marks[i]) {
      out += text[i++];
      continue;
    }
    out += kRedacted;
    while (i < text.size() && marks[i]) ++i;
  }
  return out;
}

// Each run of marked bytes, as a secret: a value that is a credential in one place of a text
// is one everywhere in it (a body that is not JSON, with its token also echoed elsewhere).
template <class Secrets>
void add_marked_runs(std::string_view text, const std::vector<bool>& marks, Secrets& into) {
  for (std::size_t i = 0; i < text.size();) {
    if (!marks[i]) {
      ++i;
      continue;
    }
    const std::size_t begin = i;
    while (i < text.size() && marks[i]) ++i;
    into.add(text.substr(begin, i - begin));
  }
}

std::string redact_with(std::string_view text, const SecretPieces* extra) {
  std::vector<bool> by_shape(text.size(), false);
  mark_credential_values(text, by_shape);
  mark_json_web_tokens(text, by_shape);
  mark_url_credentials(text, by_shape);
  SecretPieces found;
  add_marked_runs(text, by_shape, found);

  std::vector<bool> marks = std::move(by_shape);
  for (const RedactionScope* scope = t_innermost; scope != nullptr; scope = scope->outer()) {
    scope->pieces().mark(text, marks);
  }
  if (extra != nullptr) extra->mark(text, marks);
  found.mark(text, marks);
  return replace_marked(text, marks);
}

// ---- step 3 ----------------------------------------------------------------------------

// At most `limit` bytes of `text`, "..." marking a cut; a cut never falls inside a
// "[redacted]" marker (which would read as if part of a secret were shown).
std::string bounded(std::string text, std::size_t limit) {
  if (text.size() <= limit) return text;
  std::size_t cut = limit;
  const std::size_t from = limit >= kRedacted.size() ? limit - kRedacted.size() + 1 : 0;
  if (const auto marker = text.find(kRedacted, from); marker != std::string::npos && marker < cut) {
    cut = marker;
  }
  text.resize(cut);
  return text + "...";
}

// Secrets and their pieces are wiped from memory when no longer needed, as Secret does.
void wipe(std::vector<std::uint64_t>& windows) {
  if (windows.capacity() > 0) {
    OPENSSL_cleanse(windows.data(), windows.capacity() * sizeof(std::uint64_t));
  }
  windows.clear();
}

void wipe(std::string& text) {
  if (text.capacity() > 0) OPENSSL_cleanse(text.data(), text.capacity());
  text.clear();
}

}  // namespace

// ---- SecretPieces -----------------------------------------------------------------------

SecretPieces::~SecretPieces() {
  wipe(windows_);
  for (auto& form : short_forms_) wipe(form);
}

void SecretPieces::add(std::string_view secret) {
  if (secret.size() < kShortest) return;
  std::vector<std::string> forms{std::string(secret),
                                 percent_encode(secret, HexCase::kUpper),
                                 percent_encode(secret, HexCase::kLower),
                                 percent_decode(secret),
                                 json_escaped(secret, false),
                                 json_escaped(secret, true),
                                 printable_text(std::string(secret))};
  std::size_t count = windows_.size();
  for (const auto& form : forms) count += form.size() >= kWindow ? form.size() - kWindow + 1 : 0;
  // A new buffer of the final size, so that no copy of the windows is left behind unwiped.
  std::vector<std::uint64_t> grown;
  grown.reserve(count);
  grown.assign(windows_.begin(), windows_.end());
  for (auto& form : forms) {
    if (form.size() >= kWindow) {
      for (std::size_t i = 0; i + kWindow <= form.size(); ++i) {
        grown.push_back(window_at(form.data() + i));
      }
    } else if (form.size() >= kShortest &&
               std::find(short_forms_.begin(), short_forms_.end(), form) == short_forms_.end()) {
      short_forms_.push_back(form);
    }
    wipe(form);
  }
  std::sort(grown.begin(), grown.end());
  grown.erase(std::unique(grown.begin(), grown.end()), grown.end());
  wipe(windows_);
  windows_.swap(grown);
}

void SecretPieces::mark(std::string_view text, std::vector<bool>& marks) const {
  if (!windows_.empty()) {
    for (std::size_t i = 0; i + kWindow <= text.size(); ++i) {
      if (std::binary_search(windows_.begin(), windows_.end(), window_at(text.data() + i))) {
        mark_range(marks, i, i + kWindow);
      }
    }
  }
  for (const auto& form : short_forms_) {
    for (auto pos = text.find(form); pos != std::string_view::npos;
         pos = text.find(form, pos + 1)) {
      mark_range(marks, pos, pos + form.size());
    }
  }
}

// ---- RedactionScope ---------------------------------------------------------------------

RedactionScope::RedactionScope() : outer_(t_innermost) { t_innermost = this; }

RedactionScope::~RedactionScope() { t_innermost = outer_; }

void redact_from_now_on(std::string_view secret) {
  if (t_innermost != nullptr) t_innermost->add(secret);
}

void redact_credentials_of(std::string_view body) {
  if (t_innermost == nullptr) return;
  std::vector<bool> by_shape(body.size(), false);
  mark_credential_values(body, by_shape);
  mark_json_web_tokens(body, by_shape);
  add_marked_runs(body, by_shape, *t_innermost);
  const auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return;
  for (const auto& item : json.items()) {
    const std::string& key = item.key();
    const bool credential = std::any_of(kSecretKeys.begin(), kSecretKeys.end(),
                                        [&](std::string_view name) { return iequals(key, name); });
    if (credential && item.value().is_string()) {
      t_innermost->add(item.value().get_ref<const std::string&>());
    }
  }
}

// ---- the three entry points --------------------------------------------------------------

std::string redacted(std::string_view text, std::initializer_list<std::string_view> also) {
  if (also.size() == 0) return redact_with(text, nullptr);
  SecretPieces extra;
  for (auto secret : also) extra.add(secret);
  return redact_with(text, &extra);
}

std::string safe_excerpt(std::string_view text, std::size_t limit) {
  std::string safe = printable_text(redacted(text));
  return bounded(std::string(trim(safe, " ")), limit);
}

std::string safe_message(std::string_view message) {
  return bounded(printable_text(redacted(message)), kMaxMessageBytes);
}

// The public face of the same mechanism (include/azkms/secret.hpp).
std::string redact(std::string text, std::initializer_list<std::string_view> secrets) {
  return redacted(text, secrets);
}

}  // namespace azkms
