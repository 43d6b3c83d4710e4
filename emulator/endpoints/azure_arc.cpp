#include "endpoints/azure_arc.hpp"

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "encoding.hpp"
#include "endpoints/imds.hpp"
#include "http_faults.hpp"

namespace azkms::emulator::endpoints {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// A challenge's key file is removed once its key is used; a challenge (its key, and its file
// if still there) lasts this long, and no more than this many are kept at once (the oldest
// goes first): clients that never answer cannot fill the key directory.
constexpr auto kChallengeLifetime = 60s;
constexpr std::size_t kMaxChallenges = 64;
// How many of the latest keys keys_handed_out() reports.
constexpr std::size_t kKeysRemembered = 4096;

constexpr std::string_view kBasic = "Basic ";

}  // namespace

AzureArc::AzureArc(const Options& options, EndpointHost& host)
    : EndpointBehaviour(Endpoint::kAzureArc, options), host_(host) {}

AzureArc::~AzureArc() {
  std::error_code ec;
  for (const auto& [key, challenge] : challenges_) fs::remove(challenge.path, ec);
}

std::string AzureArc::token_path() const { return std::string(kImdsTokenPath); }

void AzureArc::prepare(const std::string& temp_dir) {
  temp_dir_ = temp_dir;
  key_directory_ =
      options().arc_key_directory.empty() ? temp_dir + "/arc-tokens" : options().arc_key_directory;
  fs::create_directories(key_directory_);
  if (options().arc_key_directory.empty()) {
    fs::permissions(key_directory_, fs::perms::owner_all, fs::perm_options::replace);
  }
  // Where the arc-outside-dir fault puts its key file.
  fs::create_directories(temp_dir + "/elsewhere");
}

std::optional<Grant> AzureArc::check(const httplib::Request& req, httplib::Response& res) {
  const auto params = query_params(req);
  Grant grant;
  if (!checks().metadata_header(req, res) ||
      !checks().api_version(params, {"2019-11-01", "2020-06-01"}, res) ||
      !checks().resource(params, grant.resource, res)) {
    return std::nullopt;
  }
  if (!authorized(req)) {
    challenge(req, res);
    return std::nullopt;
  }
  auto identity = select_imds_identity(checks(), params, res);
  if (!identity) return std::nullopt;
  grant.identity = *identity;
  return grant;
}

// IMDS's body. A current Arc agent names the user-assigned identity it answered for by every
// id (clients accept its token only then); the system-assigned answer stays as IMDS's.
nlohmann::json AzureArc::token_body(const Grant& grant, const IssuedToken& issued) const {
  nlohmann::json body = imds_token_body(grant, issued);
  if (!grant.identity->system_assigned) {
    body["object_id"] = grant.identity->object_id;
    body["msi_res_id"] = grant.identity->resource_id;
  }
  return body;
}

std::string AzureArc::request_credential(const httplib::Request& req) const {
  const std::string authorization = req.get_header_value("Authorization");
  return authorization.rfind(kBasic, 0) == 0 ? authorization.substr(kBasic.size()) : std::string();
}

// The last variable is azkms's development override: the client accepts key files only from
// /var/opt/azcmagent/tokens otherwise, and the emulator cannot write there.
std::map<std::string, std::string> AzureArc::client_environment(const std::string& base_url) const {
  return {{"IDENTITY_ENDPOINT", token_url(base_url)},
          {"IMDS_ENDPOINT", base_url},
          {"AZKMS_ARC_TOKEN_DIRECTORY", key_directory_}};
}

std::vector<std::string> AzureArc::keys_handed_out() const {
  std::lock_guard lock(mutex_);
  return {keys_handed_out_.begin(), keys_handed_out_.end()};
}

// True when the request answers an outstanding challenge. The key file has served its purpose
// and is removed; the key stays good until the challenge expires, so that a client resending
// its answer (libcurl does, when a reused connection drops) is still served.
bool AzureArc::authorized(const httplib::Request& req) {
  const std::string authorization = req.get_header_value("Authorization");
  if (authorization.rfind(kBasic, 0) != 0) return false;
  std::lock_guard lock(mutex_);
  expire_challenges_locked();
  const auto it = challenges_.find(authorization.substr(kBasic.size()));
  if (it == challenges_.end()) return false;
  remove_key_file(it->second);
  return true;
}

void AzureArc::challenge(const httplib::Request& req, httplib::Response& res) {
  std::string fault;
  if (!host_.pick_fault(Endpoint::kAzureArc, req, res, true, fault)) return;
  set_json_error(res, 401, "unauthorized",
                 "Read the key file named in WWW-Authenticate and send its contents as "
                 "Authorization: Basic <key>");
  if (fault == "arc-no-realm") {
    checks().log("Azure Arc: 401 challenge without WWW-Authenticate (fault)");
    return;
  }
  std::string key = random_hex(32);
  std::string directory = key_directory_;
  std::string file_name = random_hex(8) + ".key";
  if (fault == "arc-outside-dir") directory = temp_dir_ + "/elsewhere";
  if (fault == "arc-not-key") file_name = random_hex(8) + ".txt";
  if (fault == "arc-big-key") key = random_hex(4096);  // 8192 bytes
  const std::string path = directory + "/" + file_name;
  {
    std::lock_guard lock(mutex_);
    expire_challenges_locked();
    while (challenges_.size() >= kMaxChallenges) {
      forget_challenge_locked(challenge_order_.front());
    }
    write_private_file(path, key);
    // Even the faulty files hold a valid key: a client that reads one anyway gets a token,
    // which is how a test sees that it did.
    challenges_[key] = Challenge{path, std::chrono::steady_clock::now()};
    challenge_order_.push_back(key);
    keys_handed_out_.push_back(key);
    if (keys_handed_out_.size() > kKeysRemembered) keys_handed_out_.pop_front();
  }
  res.set_header("WWW-Authenticate",
                 fault == "arc-bad-realm" ? std::string("Basic realm") : "Basic realm=" + path);
  checks().log("Azure Arc: 401 challenge, key file " + path +
               (fault.empty() ? "" : " (fault " + fault + ")"));
}

// Removes the challenges older than their lifetime, with their key files.
void AzureArc::expire_challenges_locked() {
  const auto now = std::chrono::steady_clock::now();
  while (!challenge_order_.empty() &&
         now - challenges_.at(challenge_order_.front()).issued > kChallengeLifetime) {
    forget_challenge_locked(challenge_order_.front());
  }
}

void AzureArc::remove_key_file(Challenge& challenge) {
  if (challenge.path.empty()) return;
  std::error_code ec;
  fs::remove(challenge.path, ec);
  challenge.path.clear();
}

void AzureArc::forget_challenge_locked(std::string key) {  // a copy: it may name a deque element
  const auto it = challenges_.find(key);
  if (it == challenges_.end()) return;
  remove_key_file(it->second);
  challenges_.erase(it);
  challenge_order_.erase(std::find(challenge_order_.begin(), challenge_order_.end(), key));
}

}  // namespace azkms::emulator::endpoints
