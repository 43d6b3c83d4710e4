// KmsProviders: registration, lazy source creation, tokens through the cache, documents.
#include "azkms/kms_providers.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <shared_mutex>
#include <span>

#include "azkms/detect.hpp"
#include "azkms/error.hpp"
#include "file_reader.hpp"
#include "kms/token_provider.hpp"
#include "sources/common.hpp"

namespace azkms {
namespace {

using json = nlohmann::json;

Error config_error(std::string message) {
  return Error(ErrorCode::kConfiguration, std::move(message));
}

bool valid_name_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

void check_resource(const std::string& resource, const std::string& where) {
  const std::string_view scheme = "https://";
  if (!resource.starts_with(scheme) || resource.size() == scheme.size() ||
      resource.find_first_of(" \t\r\n") != std::string::npos) {
    throw config_error(where + ": resource \"" + resource +
                       "\" must be an https URL such as https://vault.azure.net");
  }
}

// Counts what reaches the real source, behind the cache: the figure that tells whether the
// cache does its job (one fetch per token lifetime).
class CountingSource final : public TokenSource {
 public:
  explicit CountingSource(std::shared_ptr<TokenSource> inner) : inner_(std::move(inner)) {}
  [[nodiscard]] SourceKind kind() const override { return inner_->kind(); }
  [[nodiscard]] std::string name() const override { return inner_->name(); }
  AccessToken fetch(const TokenRequest& request, Deadline deadline) override {
    fetches_.fetch_add(1, std::memory_order_relaxed);
    return inner_->fetch(request, deadline);
  }
  [[nodiscard]] std::uint64_t fetches() const noexcept {
    return fetches_.load(std::memory_order_relaxed);
  }

 private:
  std::shared_ptr<TokenSource> inner_;
  std::atomic<std::uint64_t> fetches_{0};
};

}  // namespace

bool is_azure_provider_name(std::string_view name) noexcept {
  return name == kAzureProvider || is_named_provider(name);
}

bool is_named_provider(std::string_view name) noexcept {
  constexpr std::string_view prefix = "azure:";
  if (!name.starts_with(prefix) || name.size() == prefix.size()) return false;
  const std::string_view rest = name.substr(prefix.size());
  return std::all_of(rest.begin(), rest.end(), valid_name_char);
}

// ---------------------------------------------------------------------------------------------
// KmsProvidersDocument

KmsProvidersDocument::~KmsProvidersDocument() { document_.wipe(); }

Secret KmsProvidersDocument::extended_json() const { return Secret(document_.relaxed_json()); }

std::string KmsProvidersDocument::redacted_json() const {
  bson_t copy = BSON_INITIALIZER;
  bson_iter_t providers;
  if (bson_iter_init(&providers, document_.get())) {
    while (bson_iter_next(&providers)) {
      bson_iter_t fields;
      if (!BSON_ITER_HOLDS_DOCUMENT(&providers) || !bson_iter_recurse(&providers, &fields)) {
        bson_append_iter(&copy, nullptr, 0, &providers);
        continue;
      }
      bson_t child;
      bson_append_document_begin(&copy, bson_iter_key(&providers), -1, &child);
      while (bson_iter_next(&fields)) {
        const std::string_view key = bson_iter_key(&fields);
        if (key == "accessToken" || key == "clientSecret") {
          bson_append_utf8(&child, key.data(), static_cast<int>(key.size()), "[redacted]", -1);
        } else {
          bson_append_iter(&child, nullptr, 0, &fields);
        }
      }
      bson_append_document_end(&copy, &child);
    }
  }
  BsonDocument redacted(&copy);
  bson_destroy(&copy);
  return redacted.relaxed_json();
}

// ---------------------------------------------------------------------------------------------
// The registry

namespace {

struct Entry {
  std::string name;
  // Managed identity (config set, `source` created on first use) or a fixed source.
  std::optional<ProviderConfig> config;
  TokenRequest request;

  std::mutex init_mutex;  // guards the lazy creation below
  std::shared_ptr<CountingSource> counted;
  std::shared_ptr<kms::TokenProvider> provider;
  std::string detected;  // how the source was chosen, once it has been
};

}  // namespace

struct KmsProviders::Impl {
  KmsProvidersOptions options;
  std::shared_ptr<TokenCache> cache;  // null when options.cache is false
  mutable std::shared_mutex mutex;    // guards `entries` (registration vs. lookups)
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> entries;

  Entry& find(std::string_view name) const {
    std::shared_lock lock(mutex);
    auto it = entries.find(name);
    if (it == entries.end()) {
      std::string known;
      for (const auto& [key, _] : entries) known += (known.empty() ? "" : ", ") + key;
      throw config_error("no KMS provider named \"" + std::string(name) +
                         "\" is registered (registered: " + (known.empty() ? "none" : known) + ")");
    }
    return *it->second;
  }

  Entry& add(std::string name) {
    if (!is_azure_provider_name(name)) {
      throw config_error("\"" + name +
                         "\" is not an Azure KMS provider name: use \"azure\" or "
                         "\"azure:<name>\" with letters, digits and underscores");
    }
    std::unique_lock lock(mutex);
    if (entries.contains(name)) {
      throw config_error("KMS provider \"" + name + "\" is registered twice");
    }
    auto entry = std::make_unique<Entry>();
    entry->name = name;
    Entry& ref = *entry;
    entries.emplace(std::move(name), std::move(entry));
    return ref;
  }

  void bind(Entry& entry, std::shared_ptr<TokenSource> source) {
    entry.counted = std::make_shared<CountingSource>(std::move(source));
    entry.provider = kms::make_token_provider(entry.counted, entry.request, cache);
  }

  // The provider's token provider, creating its source on first use.
  kms::TokenProvider& provider(Entry& entry) {
    std::lock_guard lock(entry.init_mutex);
    if (!entry.provider) {
      const Environment& env = *options.environment;
      Detection detection = detect(env, entry.config->source, options.context);
      entry.detected = detection.forced ? "forced" : "detected: " + detection.reason;
      bind(entry, detection.source);
    }
    return *entry.provider;
  }
};

KmsProviders::KmsProviders(KmsProvidersOptions options) : impl_(std::make_unique<Impl>()) {
  if (!options.environment) options.environment = std::make_shared<ProcessEnvironment>();
  if (options.token_timeout.count() <= 0) {
    throw config_error("token timeout must be positive");
  }
  if (options.cache) {
    if (options.cache_options.clock == nullptr) options.cache_options.clock = options.context.clock;
    impl_->cache = std::make_shared<TokenCache>(options.cache_options);
  }
  impl_->options = std::move(options);
}

KmsProviders::~KmsProviders() = default;
KmsProviders::KmsProviders(KmsProviders&&) noexcept = default;
KmsProviders& KmsProviders::operator=(KmsProviders&&) noexcept = default;

KmsProviders& KmsProviders::add(std::string name, ProviderConfig config) {
  if (config.source == SourceKind::kCustom) {
    throw config_error("provider \"" + name + "\": a custom source is added with add_callback()");
  }
  check_resource(config.resource, "provider \"" + name + "\"");
  Entry& entry = impl_->add(std::move(name));
  entry.request = TokenRequest{config.resource, config.identity};
  entry.config = std::move(config);
  return *this;
}

KmsProviders& KmsProviders::add_callback(std::string name, TokenCallback callback,
                                         TokenRequest request, std::string display_name) {
  if (!callback) throw config_error("provider \"" + name + "\": the token callback is empty");
  return add_source(std::move(name), make_callback_source(std::move(callback), display_name),
                    std::move(request));
}

KmsProviders& KmsProviders::add_source(std::string name, std::shared_ptr<TokenSource> source,
                                       TokenRequest request) {
  if (!source) throw config_error("provider \"" + name + "\": the token source is null");
  check_resource(request.resource, "provider \"" + name + "\"");
  Entry& entry = impl_->add(std::move(name));
  entry.request = std::move(request);
  entry.detected = "given";
  std::lock_guard lock(entry.init_mutex);
  impl_->bind(entry, std::move(source));
  return *this;
}

bool KmsProviders::contains(std::string_view name) const {
  std::shared_lock lock(impl_->mutex);
  return impl_->entries.find(name) != impl_->entries.end();
}

std::vector<std::string> KmsProviders::names() const {
  std::shared_lock lock(impl_->mutex);
  std::vector<std::string> result;
  for (const auto& [name, _] : impl_->entries) result.push_back(name);
  return result;
}

std::string KmsProviders::describe(std::string_view name) const {
  Entry& entry = impl_->find(name);
  std::lock_guard lock(entry.init_mutex);
  std::string what;
  std::optional<SourceKind> kind;
  if (entry.counted) {
    what = entry.counted->name() + " (" + entry.detected + ")";
    kind = entry.counted->kind();
  } else if (entry.config && entry.config->source) {
    what = std::string(display_name(*entry.config->source)) + " (not contacted yet)";
    kind = entry.config->source;
  } else {
    what = "auto-detected on first use";
  }
  // Without a selector, whose identity it is depends on the source (workload identity has no
  // system-assigned one).
  std::string identity = entry.request.identity.describe();
  if (entry.request.identity.is_system_assigned() && kind) {
    identity = std::string(default_identity(*kind)) + " identity";
  }
  // The resource as it is sent: a scope (".../.default") goes out as its resource.
  return entry.name + ": " + what + ", " + identity + ", resource " +
         sources::resource_of(entry.request);
}

std::chrono::milliseconds KmsProviders::token_timeout() const {
  return impl_->options.token_timeout;
}

AccessToken KmsProviders::token(std::string_view name, Deadline deadline) {
  Entry& entry = impl_->find(name);
  return impl_->provider(entry).get(deadline);
}

AccessToken KmsProviders::token(std::string_view name) {
  return token(name, std::chrono::steady_clock::now() + impl_->options.token_timeout);
}

void KmsProviders::invalidate(std::string_view name, std::string_view claims) {
  Entry& entry = impl_->find(name);
  std::lock_guard lock(entry.init_mutex);
  if (entry.provider) entry.provider->invalidate(claims);
}

std::uint64_t KmsProviders::fetch_count(std::string_view name) const {
  Entry& entry = impl_->find(name);
  std::lock_guard lock(entry.init_mutex);
  return entry.counted ? entry.counted->fetches() : 0;
}

BsonDocument KmsProviders::on_demand_document(Span<std::string> names) const {
  bson_t doc = BSON_INITIALIZER;
  for (const auto& name : names) {
    (void)impl_->find(name);
    if (bson_has_field(&doc, name.c_str())) {
      bson_destroy(&doc);
      throw config_error("KMS provider \"" + name + "\" is asked for twice");
    }
    bson_t empty;
    bson_append_document_begin(&doc, name.c_str(), static_cast<int>(name.size()), &empty);
    bson_append_document_end(&doc, &empty);
  }
  BsonDocument result(&doc);
  bson_destroy(&doc);
  return result;
}

KmsProvidersDocument KmsProviders::credentials(Span<std::string> names, Deadline deadline) {
  // Validate every name before fetching anything: a typo must not cost a token request.
  for (std::size_t i = 0; i < names.size(); ++i) {
    (void)impl_->find(names[i]);
    for (std::size_t j = 0; j < i; ++j) {
      if (names[i] == names[j]) {
        throw config_error("KMS provider \"" + names[i] + "\" is asked for twice");
      }
    }
  }
  bson_t doc = BSON_INITIALIZER;
  std::vector<ProvidedCredential> provided;
  try {
    for (const auto& name : names) {
      const AccessToken token = this->token(name, deadline);
      bson_t child;
      bson_append_document_begin(&doc, name.c_str(), static_cast<int>(name.size()), &child);
      const std::string& value = token.token.reveal();
      bson_append_utf8(&child, "accessToken", -1, value.data(), static_cast<int>(value.size()));
      bson_append_document_end(&doc, &child);
      provided.push_back({name, token.source, token.expires_on});
    }
  } catch (...) {
    // The partial document may hold tokens: wipe before freeing.
    std::memset(const_cast<std::uint8_t*>(bson_get_data(&doc)), 0, doc.len);
    bson_destroy(&doc);
    throw;
  }
  BsonDocument result(&doc);
  std::memset(const_cast<std::uint8_t*>(bson_get_data(&doc)), 0, doc.len);
  bson_destroy(&doc);
  return KmsProvidersDocument(std::move(result), std::move(provided));
}

KmsProvidersDocument KmsProviders::credentials(std::initializer_list<std::string_view> names,
                                               Deadline deadline) {
  std::vector<std::string> list(names.begin(), names.end());
  return credentials(std::span<const std::string>(list), deadline);
}

KmsProvidersDocument KmsProviders::credentials(std::initializer_list<std::string_view> names) {
  return credentials(names, std::chrono::steady_clock::now() + impl_->options.token_timeout);
}

// ---------------------------------------------------------------------------------------------
// JSON configuration

namespace {

// A provider configuration is a few hundred bytes; anything near this is not one.
constexpr std::size_t kMaxConfigBytes = 1024 * 1024;

const char* type_name(const json& value) { return value.type_name(); }

std::string string_field(const json& object, const char* field, const std::string& where) {
  const json& value = object.at(field);
  if (!value.is_string()) {
    throw config_error(where + "." + field + " must be a string, not " + type_name(value));
  }
  std::string text = value.get<std::string>();
  if (text.empty()) throw config_error(where + "." + field + " must not be empty");
  return text;
}

void parse_provider(KmsProviders& registry, const std::string& name, const json& spec,
                    const std::string& where,
                    const std::map<std::string, TokenCallback, std::less<>>& callbacks) {
  if (!spec.is_object()) {
    throw config_error(where + " must be an object, not " + type_name(spec));
  }
  static const std::vector<std::string> kKnown = {"source",     "clientId", "objectId",
                                                  "resourceId", "resource", "callback"};
  for (const auto& [key, _] : spec.items()) {
    if (std::find(kKnown.begin(), kKnown.end(), key) == kKnown.end()) {
      throw config_error(where + "." + key +
                         " is not a known field (known: source, clientId, objectId, "
                         "resourceId, resource, callback)");
    }
  }
  const std::string source_name =
      spec.contains("source") ? string_field(spec, "source", where) : "auto";

  IdentitySelector identity;
  int selectors = 0;
  if (spec.contains("clientId")) {
    identity = IdentitySelector::client_id(string_field(spec, "clientId", where));
    ++selectors;
  }
  if (spec.contains("objectId")) {
    identity = IdentitySelector::object_id(string_field(spec, "objectId", where));
    ++selectors;
  }
  if (spec.contains("resourceId")) {
    identity = IdentitySelector::resource_id(string_field(spec, "resourceId", where));
    ++selectors;
  }
  if (selectors > 1) {
    throw config_error(where + ": clientId, objectId and resourceId are mutually exclusive");
  }
  std::string resource(kKeyVaultResource);
  if (spec.contains("resource")) resource = string_field(spec, "resource", where);
  check_resource(resource, where + ".resource");

  if (source_name == "callback") {
    if (!spec.contains("callback")) {
      throw config_error(where + ".callback is required when source is \"callback\"");
    }
    const std::string key = string_field(spec, "callback", where);
    auto it = callbacks.find(key);
    if (it == callbacks.end()) {
      throw config_error(where + ".callback names \"" + key +
                         "\", which is not among the callbacks given in code");
    }
    registry.add_callback(name, it->second, TokenRequest{resource, identity}, "callback " + key);
    return;
  }
  if (spec.contains("callback")) {
    throw config_error(where + ".callback is only allowed with \"source\": \"callback\"");
  }
  ProviderConfig config;
  config.identity = identity;
  config.resource = resource;
  if (source_name != "auto") {
    const auto kind = parse_source_kind(source_name);
    if (!kind || *kind == SourceKind::kCustom) {
      throw config_error(where + ".source \"" + source_name +
                         "\" is not one of auto, imds, app-service, app-service-2017, azure-ml, "
                         "cloud-shell, azure-arc, service-fabric, workload-identity, callback");
    }
    config.source = *kind;
  }
  registry.add(name, std::move(config));
}

}  // namespace

KmsProviders KmsProviders::from_json(std::string_view text, KmsProvidersOptions options,
                                     std::string_view origin) {
  const std::string where(origin);
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    // nlohmann's message quotes the offending character, never more of the input.
    throw config_error(where + " is not valid JSON: byte " + std::to_string(e.byte) +
                       ": syntax error");
  } catch (const json::exception&) {  // out_of_range: a number too large for a double
    throw config_error(where + " is not valid JSON: a number is out of range");
  }
  if (!root.is_object()) {
    throw config_error(where + " must be a JSON object, not " + type_name(root));
  }
  for (const auto& [key, _] : root.items()) {
    if (key != "version" && key != "tokenTimeoutMs" && key != "providers") {
      throw config_error(where + ": " + key +
                         " is not a known field (known: version, tokenTimeoutMs, providers)");
    }
  }
  if (root.contains("version")) {
    const json& version = root["version"];
    if (!version.is_number_integer() || version.get<long long>() != 1) {
      throw config_error(where + ": version must be the integer 1");
    }
  }
  if (root.contains("tokenTimeoutMs")) {
    const json& timeout = root["tokenTimeoutMs"];
    if (!timeout.is_number_integer() || timeout.get<long long>() <= 0 ||
        timeout.get<long long>() > 600'000) {
      throw config_error(where + ": tokenTimeoutMs must be an integer from 1 to 600000");
    }
    options.token_timeout = std::chrono::milliseconds(timeout.get<long long>());
  }
  if (!root.contains("providers")) throw config_error(where + ": providers is required");
  const json& providers = root["providers"];
  if (!providers.is_object() || providers.empty()) {
    throw config_error(where + ": providers must be a non-empty object");
  }
  const auto callbacks = options.callbacks;
  KmsProviders registry(std::move(options));
  for (const auto& [name, spec] : providers.items()) {
    const std::string field = where + ": providers." + name;
    if (!is_azure_provider_name(name)) {
      throw config_error(field +
                         ": not an Azure KMS provider name; use \"azure\" or \"azure:<name>\" "
                         "with letters, digits and underscores");
    }
    parse_provider(registry, name, spec, field, callbacks);
  }
  return registry;
}

KmsProviders KmsProviders::from_file(const std::filesystem::path& path,
                                     KmsProvidersOptions options) {
  // Links are followed: Kubernetes mounts a ConfigMap's files as symbolic links.
  FileReadRules rules;
  rules.what = "KMS provider configuration";
  rules.code = ErrorCode::kConfiguration;
  rules.max_bytes = kMaxConfigBytes;
  rules.follow_links = true;
  const std::string text = read_regular_file(path.string(), rules);
  return from_json(text, std::move(options), path.string());
}

}  // namespace azkms
