// One endpoint of azkms-emulator seen by the real Azure SDK for JavaScript: a token from
// @azure/identity configured by the environment alone (what `azkms-emulator --print-env
// <endpoint>` exported), then wrapKey and unwrapKey through @azure/keyvault-keys'
// CryptographyClient against the emulator's Key Vault, trusted through NODE_EXTRA_CA_CERTS only.
// Never prints a token.
"use strict";

const crypto = require("node:crypto");
const { ManagedIdentityCredential, WorkloadIdentityCredential } = require("@azure/identity");
const { CryptographyClient } = require("@azure/keyvault-keys");

const kScope = "https://vault.azure.net/.default";

function credentialFor(endpoint) {
  if (endpoint === "workload-identity") {
    // Instance discovery asks login.microsoftonline.com about the authority, which a loopback
    // authority cannot answer; clients of private authorities (Azure Stack, ADFS) turn it off
    // the same way. The OpenID configuration is still fetched from the emulator.
    return new WorkloadIdentityCredential({ disableInstanceDiscovery: true });
  }
  return new ManagedIdentityCredential();
}

async function main() {
  const endpoint = process.argv[2];
  const keyId = process.env.AZKMS_KEY_VAULT_KEY_ID;
  if (!endpoint || !keyId) throw new Error("usage: smoke.js <endpoint>, with AZKMS_KEY_VAULT_KEY_ID set");

  const credential = credentialFor(endpoint);
  const token = await credential.getToken(kScope);
  if (!token || !token.token) throw new Error("no token");
  const minutes = Math.round((token.expiresOnTimestamp - Date.now()) / 60000);
  if (!(minutes > 0)) throw new Error(`the token expires in ${minutes} minutes`);

  // The challenge names resource https://vault.azure.net, whose domain a loopback vault is not
  // in: the check that the two match is what a client of a private vault turns off.
  const client = new CryptographyClient(keyId, credential, {
    disableChallengeResourceVerification: true,
  });
  const plain = crypto.randomBytes(96);
  const wrapped = await client.wrapKey("RSA-OAEP-256", plain);
  if (Buffer.from(wrapped.result).equals(plain)) throw new Error("wrapKey returned the plaintext");
  const unwrapped = await client.unwrapKey("RSA-OAEP-256", wrapped.result);
  if (!Buffer.from(unwrapped.result).equals(plain)) throw new Error("unwrapKey returned other bytes");
  console.log(`${endpoint}: token (expires in ${minutes} min), wrapKey + unwrapKey with ${wrapped.keyID}`);
}

main().catch((error) => {
  console.error(`${process.argv[2]}: FAILED: ${error && error.message ? error.message : error}`);
  process.exit(1);
});
