//! A throwaway RSA key for the fuzz harness: the token-response target
//! needs a parsed service account. Generated for this crate with
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
//! TEST ONLY: it protects nothing and is in no Google project.

pub const TEST_KEY_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCnRIDjDeZLojEo\n\
ZfQbdkM3JCR//s+LQA4nP+RyhIHQ1cFeuhXS52xdSNoZzSPwFQmjqL6EO7ykDkr2\n\
CLXqjnwi9kc0/sXVCcE1/rVRI9RGt7avhwSEJ7hwgAjmYC6wOk46L8rCtKXyAHTH\n\
fOMGzvNRTubVFDLYV7ulvtU78u/RMFr1cWRW4melzD1wsVxe45ll9PeRwfQb4I1c\n\
hZDxc3fMZlN97MwFCPX6NzUyofOxLilBqvB3ekJu71M3gfr+Y6SErZWdG5zsqrpf\n\
Tqe9m8uMMX8g3lZeBOiAx0/L/YyNw78BpITET1CHayd9cZyINSY/q+rNUvis297C\n\
pjRwL4Z7AgMBAAECggEAIINlVj1GbZ86VPL0bz4etKI24hZiu1uZJLH7svLk1PYn\n\
30TmpxdK7hsSIf/JI4rDU+eiGMwP0AfjNE3fJpfJs3YRw1BenhmGT/uRvRLs2U4u\n\
mZHyI8ogxOVuVXGOwbyjphXSIOTCePbzvC8fZhxmGYDvx61kcL8k/4PHqR6A1TVz\n\
H1ztijpBgJdcWYEdBplj0xGUq1Q/7xDoyqoay4UrlFVs6PjlL2aMsQcbRapzfC/w\n\
55IEWoFRQiLSWhXkkj+3Xl7reWTcHfEVa/F0psPe1yrHa/VXiEJZyPNiOdZb4NLO\n\
LyrtFye5f4wmrRPLdp7CElyUqcjgU34CayQBtxo+cQKBgQDmZjXvI7A3Tb5b+oE+\n\
JX+OBUhT+CGujxiaFwdb8olXtLjYEBYngnjmRugXIY/HirE77ru/0WnSUSSbWyXf\n\
J9eU5pMHv0EM5FPTzYTRJUuxc/hUoRTzncoadkov+RsUkokJgH1Cd9J/sk5NVEz+\n\
2PmH3NN8BNCPuQLQ1XxWeXLjaQKBgQC52n1qAOaDe7T1R2AoCWTMsJEnP9HXuF82\n\
yB4ZjW83twl5xfE0wGH1tHqJ0yQyAWcZ5/x5kNRgX01ubsXMniHsP05iX4FEUNIk\n\
BZUs5uB6VR8CdB2jL5pRs8/0nQlMprZ/sEaVRcd/o91yD17sSnK6PIegjZkOQL9k\n\
1m07ICeyQwKBgBpTE1Z/fWLUPyvDM4EmR6yybdEqSK7pKqZweybGT2r1+yi0rdNV\n\
1Pp6n4oFC6iA8D8ox8ri4nRlUQlvIKSeqMMalTINaCFQ9UL9+G7tE/jyhy0kOoCb\n\
Rrw/R7qze6SeGYo8ZBN0HVj5xniPaTy1Dc24LXG+GxZQzUGPIuW+eqIBAoGAZ1JS\n\
OqY5gIs7dMizak6enTTj3WAbdsPnGvtx0F7Sn7TALdSfXeY+D2zAWvLowmwJN1vC\n\
/opHpzQURfqLOFAJJ9+h4gqaQLJ1wNThs86+qQO9c42+FESYlCdUyvaqftSHzMDg\n\
3IeoewtMRubIrLBOy75u4BEYL9ZLEPIsU5xytSUCgYEA2vc+J1HK42Pf7quDgauk\n\
TIJ91X5vwhUldnwWus7ysBxCgIv8fVOVY3O57ONi7CTZC0n7PXG4a9X32wNxqP4m\n\
yrBYiXPWe/ZOQGat/v9SD9GfKvIdveq67T5vwxYgsmPPsd5CD6D72YhAN3HPRnjG\n\
ogjJSzkk9cukoG1PTdFZb2U=\n\
-----END PRIVATE KEY-----";

/// A service-account JSON key around [`TEST_KEY_PKCS8`].
pub fn service_account_json() -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": "fuzz-project",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": TEST_KEY_PKCS8,
        "client_email": "fuzz@fuzz-project.iam.gserviceaccount.com",
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token"
    })
    .to_string()
}
