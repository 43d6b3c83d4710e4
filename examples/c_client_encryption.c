/* Explicit client-side encryption with the C driver, Azure Key Vault credentials from azkms.
 *
 *   example_c_client_encryption                 shows the provider configuration and exits
 *   example_c_client_encryption mongodb://HOST  creates a data key, encrypts, decrypts
 *
 * Environment:
 *   AZKMS_CONFIG              provider configuration file (default: {"providers":{"azure":{}}},
 *                             the hosting environment detected on first use)
 *   AZKMS_KEY_VAULT_ENDPOINT  Key Vault host[:port] of the master key, e.g. myvault.vault.azure.net
 *   AZKMS_KEY_NAME            name of the master key in that vault
 *   AZKMS_CA_FILE             extra CA file for Key Vault TLS (the local emulator's CA)
 *
 * Without a reachable MongoDB deployment the second form fails cleanly once libmongoc gives
 * up selecting a server for the key vault collection (after serverSelectionTimeoutMS).
 */
#include <azkms/azkms.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>

static const char* default_config = "{\"providers\": {\"azure\": {}}}";

static int fail(const char* what, const bson_error_t* error) {
  fprintf(stderr, "error: %s: %s\n", what, error->message);
  return 1;
}

static azkms_registry_t* load_registry(bson_error_t* error) {
  const char* path = getenv("AZKMS_CONFIG");
  if (path && *path) {
    return azkms_registry_new_from_file(path, error);
  }
  return azkms_registry_new_from_json(default_config, error);
}

static int show_configuration(azkms_registry_t* registry) {
  bson_t on_demand = BSON_INITIALIZER;
  bson_error_t error;
  char* description = azkms_registry_describe(registry);
  char* json;

  printf("azkms %s\nKMS providers:\n%s", azkms_version(), description);
  bson_free(description);
  if (!azkms_registry_append_on_demand(registry, &on_demand, &error)) {
    bson_destroy(&on_demand);
    return fail("on-demand kmsProviders", &error);
  }
  json = bson_as_relaxed_extended_json(&on_demand, NULL);
  printf("kmsProviders given to libmongoc: %s\n", json);
  printf("credentials are fetched when libmongoc first needs Key Vault, not before.\n");
  printf("pass a MongoDB URI to create a data key and encrypt a value.\n");
  bson_free(json);
  bson_destroy(&on_demand);
  return 0;
}

static int run(azkms_registry_t* registry, const char* uri_string) {
  const char* endpoint = getenv("AZKMS_KEY_VAULT_ENDPOINT");
  const char* key_name = getenv("AZKMS_KEY_NAME");
  const char* ca_file = getenv("AZKMS_CA_FILE");
  bson_error_t error;
  mongoc_uri_t* uri = NULL;
  mongoc_client_t* key_vault_client = NULL;
  mongoc_client_encryption_opts_t* opts = NULL;
  mongoc_client_encryption_t* encryption = NULL;
  mongoc_client_encryption_datakey_opts_t* datakey_opts = NULL;
  mongoc_client_encryption_encrypt_opts_t* encrypt_opts = NULL;
  bson_t kms_providers = BSON_INITIALIZER;
  bson_t tls_opts = BSON_INITIALIZER;
  bson_t* master_key = NULL;
  bson_value_t key_id = {0}, plain = {0}, ciphertext = {0}, decrypted = {0};
  int status = 1;

  if (!endpoint || !key_name) {
    fprintf(stderr, "error: set AZKMS_KEY_VAULT_ENDPOINT and AZKMS_KEY_NAME\n");
    return 2;
  }
  uri = mongoc_uri_new_with_error(uri_string, &error);
  if (!uri) {
    fprintf(stderr, "error: invalid MongoDB URI\n");
    return 2;
  }
  if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS)) {
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 3000);
  }
  key_vault_client = mongoc_client_new_from_uri_with_error(uri, &error);
  if (!key_vault_client) {
    status = fail("client", &error);
    goto done;
  }

  opts = mongoc_client_encryption_opts_new();
  mongoc_client_encryption_opts_set_keyvault_client(opts, key_vault_client);
  mongoc_client_encryption_opts_set_keyvault_namespace(opts, "encryption", "__keyVault");
  if (!azkms_registry_append_on_demand(registry, &kms_providers, &error)) {
    status = fail("kmsProviders", &error);
    goto done;
  }
  mongoc_client_encryption_opts_set_kms_providers(opts, &kms_providers);
  if (ca_file && *ca_file) {
    bson_t azure_tls;
    BSON_APPEND_DOCUMENT_BEGIN(&tls_opts, "azure", &azure_tls);
    BSON_APPEND_UTF8(&azure_tls, "tlsCAFile", ca_file);
    bson_append_document_end(&tls_opts, &azure_tls);
    mongoc_client_encryption_opts_set_tls_opts(opts, &tls_opts);
  }
  /* The one azkms call: libmongoc now asks the registry for Azure credentials on demand. */
  if (!azkms_install_client_encryption(opts, registry, &error)) {
    status = fail("installing the credential callback", &error);
    goto done;
  }
  encryption = mongoc_client_encryption_new(opts, &error);
  if (!encryption) {
    status = fail("client encryption", &error);
    goto done;
  }

  master_key = BCON_NEW("keyVaultEndpoint", BCON_UTF8(endpoint), "keyName", BCON_UTF8(key_name));
  datakey_opts = mongoc_client_encryption_datakey_opts_new();
  mongoc_client_encryption_datakey_opts_set_masterkey(datakey_opts, master_key);
  if (!mongoc_client_encryption_create_datakey(encryption, "azure", datakey_opts, &key_id,
                                               &error)) {
    status = fail("creating a data key", &error);
    goto done;
  }
  printf("created a data key wrapped by %s/keys/%s\n", endpoint, key_name);

  plain.value_type = BSON_TYPE_UTF8;
  plain.value.v_utf8.str = "457-55-5462";
  plain.value.v_utf8.len = 11;
  encrypt_opts = mongoc_client_encryption_encrypt_opts_new();
  mongoc_client_encryption_encrypt_opts_set_keyid(encrypt_opts, &key_id);
  mongoc_client_encryption_encrypt_opts_set_algorithm(
      encrypt_opts, MONGOC_AEAD_AES_256_CBC_HMAC_SHA_512_DETERMINISTIC);
  if (!mongoc_client_encryption_encrypt(encryption, &plain, encrypt_opts, &ciphertext, &error)) {
    status = fail("encrypting", &error);
    goto done;
  }
  printf("encrypted a field: binary subtype %d, %u bytes\n", (int)ciphertext.value.v_binary.subtype,
         (unsigned)ciphertext.value.v_binary.data_len);
  if (!mongoc_client_encryption_decrypt(encryption, &ciphertext, &decrypted, &error)) {
    status = fail("decrypting", &error);
    goto done;
  }
  printf("decrypted: %s\n", decrypted.value.v_utf8.str);
  status = 0;

done:
  bson_value_destroy(&decrypted);
  bson_value_destroy(&ciphertext);
  bson_value_destroy(&key_id);
  mongoc_client_encryption_encrypt_opts_destroy(encrypt_opts);
  mongoc_client_encryption_datakey_opts_destroy(datakey_opts);
  bson_destroy(master_key);
  mongoc_client_encryption_destroy(encryption);
  mongoc_client_encryption_opts_destroy(opts);
  mongoc_client_destroy(key_vault_client);
  mongoc_uri_destroy(uri);
  bson_destroy(&tls_opts);
  bson_destroy(&kms_providers);
  return status;
}

int main(int argc, char** argv) {
  bson_error_t error;
  azkms_registry_t* registry;
  int status;

  mongoc_init();
  registry = load_registry(&error);
  if (!registry) {
    status = fail("configuration", &error);
  } else if (argc < 2) {
    status = show_configuration(registry);
  } else {
    status = run(registry, argv[1]);
  }
  /* After every libmongoc object that used the registry is gone. */
  azkms_registry_destroy(registry);
  mongoc_cleanup();
  return status;
}
