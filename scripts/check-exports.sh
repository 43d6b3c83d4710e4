#!/usr/bin/env bash
# Checks the dynamic symbol table of a built libazkms.so against the public headers:
#  - nothing but the public API is exported: every azkms symbol names something declared in
#    include/azkms (outside comments), none lives in an internal namespace (azkms::detail,
#    azkms::sources, azkms::kms, an anonymous namespace...), and no symbol of a library azkms
#    uses inside (nlohmann json, date, libcurl, cpp-httplib) leaks out;
#  - the C API (every azkms_* function declared in azkms.h) and the main C++ entry points are
#    there.
#   scripts/check-exports.sh LIBRARY INCLUDE_DIR      (INCLUDE_DIR holds azkms/*.hpp, azkms.h)
set -euo pipefail
library="$1"
include_dir="$2"

symbols=$(nm -D --defined-only -C "$library" | cut -d' ' -f3-)
if [[ -z "$symbols" ]]; then
  echo "check-exports: no dynamic symbols in $library"
  exit 1
fi

# Every identifier written in the public headers' code (comments removed).
public_names=$(cat "$include_dir"/azkms/*.hpp "$include_dir"/azkms/*.h |
  perl -0pe 's{/\*.*?\*/}{}gs; s{//[^\n]*}{}g' | grep -oE '[A-Za-z_][A-Za-z0-9_]*' | sort -u)
declare -A public
for name in $public_names; do public[$name]=1; done

internal_namespaces='azkms::(detail|sources|kms|http_detail|cli|emulator)::|\(anonymous namespace\)|\{anonymous\}'
foreign='(^|[^A-Za-z_:])(nlohmann|date|httplib|Curl_|curl_|CLI)(::|[A-Za-z_]*\()'
special_prefix='^((typeinfo name|typeinfo|vtable|VTT|construction vtable|guard variable) for |(non-virtual |virtual |covariant return )thunk to )'
failed=0
refuse() {
  echo "check-exports: exported but not public: $1 ($2)"
  failed=1
}

while IFS= read -r symbol; do
  # The entity a symbol belongs to: "vtable for azkms::X" is azkms::X's.
  entity="$symbol"
  [[ "$symbol" =~ $special_prefix ]] && entity="${symbol:${#BASH_REMATCH[0]}}"
  case "$entity" in
    _init | _fini | _edata | _end | __bss_start) continue ;;
  esac
  # Its qualified name: before the parameters, without template arguments or the return type
  # a function template's symbol starts with ("void std::f<int>(int)" is std::f's).
  qualified="${entity//(anonymous namespace)/{anonymous\}}"
  while [[ "$qualified" =~ \<[^\<\>]*\> ]]; do qualified="${qualified//"${BASH_REMATCH[0]}"/}"; done
  qualified="${qualified%%(*}"
  qualified="${qualified##* }"
  if [[ "$entity" =~ $foreign ]]; then
    refuse "$symbol" "a library used inside azkms"
  elif [[ "$qualified" =~ ^azkms_[a-z0-9_]+$ ]]; then
    [[ -n "${public[$qualified]:-}" ]] || refuse "$symbol" "not declared in azkms.h"
  elif [[ "$qualified" =~ ^azkms::([A-Za-z_][A-Za-z0-9_]*) ]]; then
    name="${BASH_REMATCH[1]}"
    if [[ "$qualified" =~ $internal_namespaces ]]; then
      refuse "$symbol" "internal namespace"
    # Operators (operator==, operator<<) are named by their operand types.
    elif [[ "$name" != operator && -z "${public[$name]:-}" ]]; then
      refuse "$symbol" "$name is in no public header"
    fi
  elif [[ "$qualified" =~ ^(std|__gnu_cxx):: ]]; then
    # Instances of standard templates for public types (std::vector<azkms::HttpHeader>) are
    # exported by the compiler with the type; those for internal types are hidden with it.
    [[ "$entity" =~ $internal_namespaces ]] && refuse "$symbol" "instance for an internal type"
  else
    refuse "$symbol" "not in namespace azkms"
  fi
done <<<"$symbols"

# The C API, every function of azkms.h.
c_functions=$(grep -oE '\bazkms_[a-z0-9_]+ *\(' "$include_dir/azkms/azkms.h" | tr -d ' (' | sort -u)
for function in $c_functions; do
  grep -qx "$function" <<<"$symbols" || { echo "check-exports: missing C function $function"; failed=1; }
done

# The main C++ entry points (a prefix of the demangled name).
required=(
  "azkms::detect(" "azkms::make_source(" "azkms::make_callback_source(" "azkms::set_log_hook("
  "azkms::to_string(azkms::ErrorCode)" "azkms::Error::Error(" "typeinfo for azkms::Error"
  "azkms::TokenCache::TokenCache(" "azkms::TokenCache::handle(" "azkms::TokenHandle::get("
  "vtable for azkms::ProcessEnvironment" "vtable for azkms::ManualClock"
  "azkms::KmsProviders::from_json(" "azkms::KmsProviders::credentials("
  "azkms::CryptSession::CryptSession(" "azkms::FileKeyVault::FileKeyVault("
  "azkms::BsonDocument::from_bytes(" "azkms::Secret::redacted"
)
for prefix in "${required[@]}"; do
  grep -qF -- "$prefix" <<<"$symbols" || { echo "check-exports: missing $prefix...)"; failed=1; }
done

if ((failed)); then
  echo "check-exports: FAILED for $library"
else
  echo "check-exports: $(wc -l <<<"$symbols") exported symbols, all public; C API and entry points present"
fi
exit "$failed"
