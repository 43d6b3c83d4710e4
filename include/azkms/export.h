/* azkms/export.h: AZKMS_EXPORT marks the public API, the only symbols the shared library
 * exports (it is built with hidden visibility: everything else stays inside). C and C++.
 *
 * AZKMS_STATIC_DEFINE, defined while azkms itself is compiled, leaves the API unmarked: for a
 * static azkms linked into a shared library of your own that must not export it in turn. */
#ifndef AZKMS_EXPORT_H
#define AZKMS_EXPORT_H

#if defined(AZKMS_STATIC_DEFINE)
#define AZKMS_EXPORT
#elif defined(__GNUC__) && __GNUC__ >= 4
#define AZKMS_EXPORT __attribute__((visibility("default")))
#else
#define AZKMS_EXPORT
#endif

#endif /* AZKMS_EXPORT_H */
