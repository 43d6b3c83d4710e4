/* azkms/export.h: AZKMS_EXPORT marks the public API, the only symbols the shared library
 * exports (it is built with hidden visibility: everything else stays inside). C and C++.
 *
 * Define AZKMS_STATIC_DEFINE when building azkms into a program or library of your own from
 * its sources, to keep its symbols out of your dynamic symbol table too. */
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
