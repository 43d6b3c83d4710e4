/* The kmsProviders document of a MongoDB C driver program, filled through the azkms C API:
 * once with Azure credentials fetched now (what a driver that wants them up front needs), once
 * as the on-demand entry that makes libmongoc ask azkms when it needs them. Prints the shape
 * of the documents, never a token.
 *
 *   cc kms_providers.c -o kms_providers $(pkg-config --cflags --libs azkms)
 *   ./kms_providers
 *
 * Off Azure, run it against the emulator:
 *   eval "$(azkms-emulator --print-env app-service)"; kms_providers; kill $AZKMS_EMULATOR_PID
 */
#include <azkms/azkms.h>
#include <azkms/version.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>

static int fail(const char* what, const bson_error_t* error) {
  fprintf(stderr, "error: %s: %s\n", what, error->message);
  return 1;
}

/* Prints {"azure": {"accessToken": [N bytes]}}: the document's shape, the token hidden. */
static int show_credentials(const bson_t* credentials) {
  bson_iter_t iter;
  bson_iter_t token;
  uint32_t length = 0;

  if (!bson_iter_init(&iter, credentials) ||
      !bson_iter_find_descendant(&iter, "azure.accessToken", &token) ||
      !BSON_ITER_HOLDS_UTF8(&token)) {
    fprintf(stderr, "error: no azure.accessToken in the credentials\n");
    return 1;
  }
  bson_iter_utf8(&token, &length);
  printf("kmsProviders with credentials: {\"azure\": {\"accessToken\": [%u bytes]}}\n",
         (unsigned)length);
  return 0;
}

int main(void) {
  const char* providers[] = {"azure"};
  bson_t credentials = BSON_INITIALIZER;
  bson_t on_demand = BSON_INITIALIZER;
  bson_error_t error;
  azkms_registry_t* registry;
  char* json;
  int status = 1;

  mongoc_init();
  printf("azkms %s (headers %s)\n", azkms_version(), AZKMS_VERSION_STRING);
  if (strcmp(azkms_version(), AZKMS_VERSION_STRING) != 0) {
    fprintf(stderr, "error: the library is not the version of the headers\n");
    mongoc_cleanup();
    return 1;
  }
  /* The Azure identity of the hosting environment, detected on first use. */
  registry = azkms_registry_new_from_json("{\"providers\": {\"azure\": {}}}", &error);
  if (!registry) {
    status = fail("configuration", &error);
    goto done;
  }
  if (!azkms_registry_append_credentials(registry, providers, 1, &credentials, &error)) {
    status = fail("credentials", &error);
    goto done;
  }
  if (show_credentials(&credentials) != 0) goto done;
  if (!azkms_registry_append_on_demand(registry, &on_demand, &error)) {
    status = fail("on-demand kmsProviders", &error);
    goto done;
  }
  json = bson_as_relaxed_extended_json(&on_demand, NULL);
  printf("kmsProviders on demand: %s\n", json);
  bson_free(json);
  status = 0;

done:
  bson_destroy(&on_demand);
  bson_destroy(&credentials); /* it held a token */
  azkms_registry_destroy(registry);
  mongoc_cleanup();
  return status;
}
