#include "fork_safety.hpp"

#include <pthread.h>

#include <mutex>
#include <stdexcept>

namespace azkms::detail {

// Plain globals with constant initialisation and no destructor to run: a fork (or an object
// unregistering during static destruction) may come at any time, including before any
// dynamic initialiser of this file would have run or after it would have been torn down.
struct ForkRegistry {
  static std::mutex mutex;
  static ForkRegistration* first;
  static ForkRegistration* last;

  static void prepare() {
    mutex.lock();
    for (auto* r = first; r != nullptr; r = r->next_) r->target_->before_fork();
  }
  static void in_parent() {
    for (auto* r = last; r != nullptr; r = r->previous_) r->target_->after_fork_in_parent();
    mutex.unlock();
  }
  static void in_child() {
    for (auto* r = first; r != nullptr; r = r->next_) r->target_->after_fork_in_child();
    mutex.unlock();
  }
};

std::mutex ForkRegistry::mutex;
ForkRegistration* ForkRegistry::first = nullptr;
ForkRegistration* ForkRegistry::last = nullptr;

namespace {

void install_handlers() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (pthread_atfork(&ForkRegistry::prepare, &ForkRegistry::in_parent, &ForkRegistry::in_child) !=
        0) {
      throw std::runtime_error("azkms: pthread_atfork failed");
    }
  });
}

}  // namespace

ForkRegistration::ForkRegistration(ForkAware& target) : target_(&target) {
  install_handlers();
  std::lock_guard lock(ForkRegistry::mutex);
  previous_ = ForkRegistry::last;
  if (previous_ != nullptr) {
    previous_->next_ = this;
  } else {
    ForkRegistry::first = this;
  }
  ForkRegistry::last = this;
}

ForkRegistration::~ForkRegistration() {
  std::lock_guard lock(ForkRegistry::mutex);
  (previous_ != nullptr ? previous_->next_ : ForkRegistry::first) = next_;
  (next_ != nullptr ? next_->previous_ : ForkRegistry::last) = previous_;
}

}  // namespace azkms::detail
