// fork() in a process that uses azkms (pre-fork servers: Apache prefork, PHP-FPM, uwsgi).
//
// After fork() the child is a copy of the parent with one thread: the one that called fork().
// Whatever the parent's other threads were doing is frozen in the copy: a mutex one of them
// held stays locked, a fetch one of them was running never finishes, a condition variable
// they waited on still counts them as waiters, and every socket is shared with the parent. An
// object with such state registers here, and pthread_atfork() calls it around every fork():
//
//  - before_fork(), in the forking thread: lock the object's mutexes, so that no other thread
//    is half-way through changing its state when the copy is made;
//  - after_fork_in_parent(): unlock them;
//  - after_fork_in_child(), in the child: drop what belonged to the parent's threads and
//    connections (without sending anything on a shared socket), then unlock.
//
// Lock order: the registry's lock, then each object's. So no object may be created or
// destroyed (which registers or unregisters it) while its owner holds a lock that one of the
// before_fork() hooks takes.
#pragma once

namespace azkms::detail {

class ForkAware {
 public:
  virtual void before_fork() = 0;
  virtual void after_fork_in_parent() = 0;
  // Runs in the child, where the forking thread is the only one: it must not wait for
  // anything, and must not write to a descriptor shared with the parent.
  virtual void after_fork_in_child() = 0;

 protected:
  ForkAware() = default;
  ~ForkAware() = default;
  ForkAware(const ForkAware&) = default;
  ForkAware& operator=(const ForkAware&) = default;
};

// Keeps `target` registered for as long as it lives. Make it the last member of the object it
// registers: it is then constructed after every other member and destroyed before any.
class ForkRegistration {
 public:
  explicit ForkRegistration(ForkAware& target);
  ~ForkRegistration();
  ForkRegistration(const ForkRegistration&) = delete;
  ForkRegistration& operator=(const ForkRegistration&) = delete;

 private:
  friend struct ForkRegistry;
  ForkAware* target_;
  ForkRegistration* previous_ = nullptr;
  ForkRegistration* next_ = nullptr;
};

}  // namespace azkms::detail
