//! RS256 (RFC 7518 §3.3): RSASSA-PKCS1-v1_5 signatures over SHA-256
//! (RFC 8017 §8.2), for the GCS service-account JWT.
//!
//! The arithmetic is RustCrypto's `crypto-bigint` (constant-time
//! Montgomery exponentiation on heap-backed integers); this module only
//! checks that the key's numbers fit together, writes the EMSA-PKCS1-v1_5
//! encoding and calls `pow`. It replaces the `rsa` crate, whose
//! `num-bigint-dig` arithmetic was the larger share of the wasm (crypto-bigint
//! 0.6 rather than 0.7: 0.7's const-generic Karatsuba adds ~30 KB of wasm
//! that 0.6's slice-based code does not). Tests check every signature byte
//! for byte against `rsa` (PKCS#1 v1.5 is deterministic).
//!
//! The signature is `m^d mod n`, without the CRT: the Montgomery parameters
//! are then those of the public modulus, and no value derived from the
//! primes outlives [`RsaKey::from_components`], which zeroizes them. `d`
//! is zeroized when the key is dropped. The result is checked with the
//! public exponent before it is returned (as `rsa` does), so a faulty
//! computation is never sent. (A 2048-bit signature takes ~40 ms in V8,
//! 4096 bits ~250 ms; one is made per access token, about hourly.)

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, NonZero, Odd};
use zeroize::{Zeroize, Zeroizing};

/// DER `DigestInfo` header for SHA-256 (RFC 8017 §9.2, note 1).
pub(crate) const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The public exponent may not exceed 2^33 - 1 (as in `rsa`).
const MAX_PUBLIC_EXPONENT: u64 = (1 << 33) - 1;

/// An RSA private key whose numbers were checked to form a key. Of its
/// fields only `d` is secret; it is zeroized when the key is dropped.
#[derive(Clone)]
pub(crate) struct RsaKey {
    /// Montgomery parameters of the modulus `n` (public).
    params: BoxedMontyParams,
    /// The public exponent, at the modulus's precision.
    e: BoxedUint,
    /// Significant bits of `e` (public).
    e_bits: u32,
    /// The private exponent, at the modulus's precision.
    d: BoxedUint,
    /// Length of `n` in bytes: the signature's length.
    size: usize,
}

impl Drop for RsaKey {
    fn drop(&mut self) {
        self.d.zeroize();
    }
}

impl PartialEq for RsaKey {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size
            && self.params.modulus() == other.params.modulus()
            && self.e == other.e
            && self.d == other.d
    }
}

impl Eq for RsaKey {}

/// Big-endian unsigned bytes, leading zeros dropped.
fn trimmed(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.get(zeros..).unwrap_or_default()
}

/// A number from big-endian bytes at `bits` of precision (`None`: it does
/// not fit).
fn uint(bytes: &[u8], bits: u32) -> Option<BoxedUint> {
    BoxedUint::from_be_slice(trimmed(bytes), bits).ok()
}

impl RsaKey {
    /// A two-prime key from its big-endian numbers: modulus `n`, public
    /// exponent `e`, private exponent `d` and primes `p`, `q` (leading zero
    /// bytes allowed). `None` unless they form a valid key, by the checks of
    /// `rsa`'s `RsaPrivateKey::from_components`: `n` odd and greater than
    /// `e`; `e` odd, at least 3 and at most 2^33 - 1; `p`, `q` > 1 with
    /// `p·q = n`; `d·e ≡ 1 (mod p-1)` and `(mod q-1)`. (`d` must also be no
    /// longer than `n`, as in every real key.)
    pub(crate) fn from_components(
        n: &[u8],
        e: &[u8],
        d: &[u8],
        p: &[u8],
        q: &[u8],
    ) -> Option<RsaKey> {
        let e_bytes = trimmed(e);
        if e_bytes.len() > 8 {
            return None;
        }
        let e_value = e_bytes
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        if e_value < 3 || e_value % 2 == 0 || e_value > MAX_PUBLIC_EXPONENT {
            return None;
        }
        let size = trimmed(n).len();
        // Every number at the modulus's precision, in whole 64-bit words;
        // products at twice that.
        let bits = u32::try_from(size).ok()?.checked_mul(8)?.div_ceil(64) * 64;
        let wide = 2 * bits;
        let n = uint(n, bits)?;
        let e = uint(e_bytes, bits)?;
        if n <= e {
            return None;
        }
        let n = Option::<Odd<BoxedUint>>::from(Odd::new(n))?;
        let d = Zeroizing::new(uint(d, bits)?);
        let p = Zeroizing::new(uint(p, bits)?);
        let q = Zeroizing::new(uint(q, bits)?);
        let one = BoxedUint::one_with_precision(bits);
        if *p <= one || *q <= one {
            return None;
        }
        if *Zeroizing::new(p.mul(&q)) != n.as_ref().widen(wide) {
            return None;
        }
        let de = Zeroizing::new(d.mul(&e));
        let wide_one = one.widen(wide);
        for prime in [&p, &q] {
            let below = Zeroizing::new(prime.wrapping_sub(&one));
            let below = Option::<NonZero<BoxedUint>>::from(NonZero::new(below.widen(wide)))
                .map(Zeroizing::new)?;
            if *Zeroizing::new(de.rem(&below)) != wide_one {
                return None;
            }
        }
        Some(RsaKey {
            params: BoxedMontyParams::new_vartime(n),
            e,
            e_bits: u64::BITS - e_value.leading_zeros(),
            d: (*d).clone(),
            size,
        })
    }

    /// Bytes in the modulus (and in a signature).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The RSASSA-PKCS1-v1_5 signature of a SHA-256 digest (`None`: the
    /// key is too small for the encoding, or the result did not verify).
    pub(crate) fn sign_sha256(&self, digest: &[u8; 32]) -> Option<Vec<u8>> {
        // EM = 0x00 || 0x01 || PS (0xff…, at least 8) || 0x00 || DigestInfo || H.
        let k = self.size;
        let t_len = SHA256_DIGEST_INFO.len() + digest.len();
        if k < t_len + 11 {
            return None;
        }
        let mut em = vec![0xff; k];
        let (head, t) = em.split_at_mut(k - t_len);
        let (prefix, hash) = t.split_at_mut(SHA256_DIGEST_INFO.len());
        prefix.copy_from_slice(&SHA256_DIGEST_INFO);
        hash.copy_from_slice(digest);
        *head.first_mut()? = 0x00;
        *head.get_mut(1)? = 0x01;
        *head.last_mut()? = 0x00;

        let modulus = self.params.modulus();
        let m = BoxedUint::from_be_slice(&em, modulus.bits_precision()).ok()?;
        if m >= *modulus.as_ref() {
            return None;
        }
        let signature = BoxedMontyForm::new(m.clone(), self.params.clone()).pow(&self.d);
        // s^e = m, or the signature does not leave.
        if signature.pow_bounded_exp(&self.e, self.e_bits).retrieve() != m {
            return None;
        }
        let bytes = signature.retrieve().to_be_bytes();
        let extra = bytes.len().checked_sub(k)?;
        let (zeros, out) = bytes.split_at(extra);
        zeros.iter().all(|&b| b == 0).then(|| out.to_vec())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    use rsa::{Pkcs1v15Sign, RsaPrivateKey};
    use sha2::{Digest, Sha256};

    /// TEST-ONLY throwaway 3072-bit key (`openssl genpkey -algorithm RSA
    /// -pkeyopt rsa_keygen_bits:3072`). It protects nothing.
    pub(crate) const TEST_KEY_3072: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIG/gIBADANBgkqhkiG9w0BAQEFAASCBugwggbkAgEAAoIBgQCxESnvCBQx8s38\n\
tA3FJKYk5H8RzdV4dptbs/deuHOyYSKexSaRkcsyrr5tIOPqaEdOHH/cA1rAsL/d\n\
vvq1dByaaYu1N8GLhNrOxkiAbKAAOZYxmEWnKFINFThuOpkEGygCkMy/yrhfZUXR\n\
WiIvwhZ3SO2HDY7frqxiQzF0YGb6TfofcbwpeqI1X+3odDPgBnWRR8gbtg5clrCI\n\
RWIdzzaC/2RrM7miFD9/u6YZ0JksrieXlpwsH1pbTvcsyQpbyffx1LEEO/1o4chc\n\
8ouuC114/zvsdMH2YNV5Ylema/evzGQr2uvDI+vekO8l5HaJfE9r1Pyu6TdDJusV\n\
mdBDsoD1lnTSQ5nQkExGCC7xwZpWwxQ5gcIfYHXmnN3Z/OMemr8LNQdUy5mSU2oU\n\
vcs2qWPSTBvPUCRfOhL69olL4zgJvhr71gU2Ktee6GAX0Y2sTEn3CmBESodV+BC3\n\
njMt2TNyorbfB2DyUmNnkviAyIr9Ch1Hlfz/+YCW0pLAZcr7r4MCAwEAAQKCAYAH\n\
rmHuT6BopkrPSpRKWBOpCAyHHjHDfwmwSbdScZf7RgF1d8H7kKKK+U+jdkjM02c8\n\
eToGtlKKh2BbYzyHAJl5DVkVLG0F+2Zuj+V3RL8QI29jiWKEJNiiXqhLB9m5duAe\n\
dF+ddlLXOJJ1yX4wKjBFTnGXaTwocfBidt2/Was98oIGOS3bcsl0nUu5yMizUDRr\n\
b/y7TwOCerr/vlrKRkHsHt4hVGYaJNy4UtCa0BTE/m0TQ2JU+6s0yNEqLTJ41uML\n\
JGeV4auysO4Zxw2i9ktyfozgmdGhmOy5yz3kWs6W8fWPf0iWHysolVj5WWySTc7q\n\
G7PCGdZrf67WuUUwG9bYOpwu82TLo2Tt5YnmhRKH/RpTx2Mhq94eRtXSRkOR9n8j\n\
D3OdJ8457BMcmFHaklFua9e3OjqlfU5UF8UFDcvvy+ErgI0VgQh/i9LWroiyTvcb\n\
ySHvSBsdDKBAb/yw3xSyzKaGVqU7giTSu/uokTX04vOv6Cd4TyOa4F680ZNd1DkC\n\
gcEA43ZYOLCs3WxQNn/tEPlPnYRJJ3lyLGW0kSmhpOBF3lcRyoaxWmaNm/TCt/6j\n\
wzArtACZeFBzsgYuZUEk7G5Hcq9dd2sZOqlJjB1jGGP90dXrg8TTT1unbvITwGG9\n\
Cf37scOklkikT03PQZe1LOnSC/IXK/du7u9nEGbVczykgOElwGhFNePFaNUC+uq+\n\
NwwVxxzzjibtuFLMOSB2GxRyIcOl2jhbJqjcNM3hCw9phVFj9xb/ecP2cgfY2s1v\n\
HRhNAoHBAMdIOFpVakPn76rNFAgkHdB+sl+HCq+6RDr5+jT9KEAqRKbyyoktoUbL\n\
8Akw1qvKLxJFIwdE4mwcHUVzx/D43E7QuQbH9Ov4EXexAVS7EwOQSx43fkAJJcx+\n\
kXON1gJqx1nuIN24OxJevzunK9bEV3LaxWtu3xCq21Wd62ufMYLvx9CRzjktDDdO\n\
q1EvQ1xturzq1qhyzgIo+jNfHIjWzZKp0fzejJSFNbfI7aEMBAOSIfXVlJRKnjj2\n\
4iFbeKXPDwKBwQDBS9eqzVEJlbsQpWPDkeo7dKhqGEWTPxbUaWmJYGFfkeR3lEDx\n\
Dsd2aehzTbzC6ZOqEvxYhx3agnA48cQ7+3dSGX63Ndcpx6TNokeM+aRABqduwfvE\n\
q6G8oZFxYl2wORsENLsQT0j6b6gaGJ8JPOaX6jIQ1eN6vw15nbn0hOtS7oITYUi3\n\
hAlFjgdLTeM5ilaTb6H2AlTv18TfIxva5WQcF1RA/rVPRB5l7TM6H+3PMpxd5ThT\n\
tNkgjFSXlA7Bzd0CgcEAupcJhLNjO0/InUFF11WRwO1QMJetztn2Fs6GkuTSsjmh\n\
bDv6nbTmw/Yhu0lKRzGZH18yrBS4eIdedPAyrpMlHHrcM9g3oFX2bP6EA4TiCb0q\n\
SJGnGWg3RyDfKbYNQtgd7jtD9LYSQWILZlxhdMcEJltm6++01tNTaPfjPTKiVjoS\n\
+lv7HpfqT0LOr8Y0KS/o4Ah2kuRjtawOkNkmS43sj72IC1+Je2q64Gk27krk2z8R\n\
oy+m3a58NVQcaSVPctjLAoHAGpWZzvF/XOX+JbW+M6jfF4dPvOT2lMzgVM5Kp3Rn\n\
QUjhyE/vlhT36vrDE91wqDci+PCZ2GP2IZ6qkxNo3IAexVIUk76TB660Zoyua2cy\n\
C4XJP9HgubyQ+lGLEBl82rKhppJSHZyHCeJt2cVuGRYLWkAc5uchJxk5+GwpL2Bg\n\
c7pmUgExgFek3OXftuPyKHTgAt7mK3AP5txhZKOO+yT1Kv+PhyMjGPdWyNVTCUZA\n\
gGsO9aBlFsJRB6tTtmD8Qlyh\n\
-----END PRIVATE KEY-----";

    /// TEST-ONLY throwaway 4096-bit key (`openssl genpkey -algorithm RSA
    /// -pkeyopt rsa_keygen_bits:4096`). It protects nothing.
    pub(crate) const TEST_KEY_4096: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIJQQIBADANBgkqhkiG9w0BAQEFAASCCSswggknAgEAAoICAQCoiwVj4KvTwb7b\n\
jJmZCWCcBx0q2gMF19sU6Hdg6P2FukthdERlfO8bIyNK+3ul5n3k3GxxsWo2jtFp\n\
CZjWNt5M4NO13C8m+C5Ph2Dll73aVO2OlZZrBhTHbda8hk8XlQtlWo875Z2sLXOx\n\
g8OtnAKeM+9yTLZFkN4TFyV5nH2dvqEezbUv/dAajeV/EvTKbbFdDw/ba2QsZsir\n\
pHISpCNHD8HXvWWZ2c+3vUNr0ZQ9aor2BzNXUBRHjJEh6ZqSZnmxgTJOuDB2TxGo\n\
E+oeYEEWWb2PzczAbT5HZTqdhHb5oKpbPGVxMOLQC1JC6qEvJUKhhesiS0Pn/SL2\n\
PSBlCnX2n7L5FJ0sYpsloAaFO9S94GWPDzlf2/pt8ha0AJkVcn0vX3gjfv8EkC8r\n\
nGidc2KNlJPYCYLqCDJYAhuKfApHDfcbxqzpLCQoG7DavXD4vxmTanBGf265J1pk\n\
8SyabwQrjXgKtiiOQg3NIMH72ugO37D5N6SdwZ6zOsjY7WPxDngbwExgC9Hu3p56\n\
/hFV/Tbh33wOPCFuESgEGpy2+gmeiHSq9WN6/4V2LkjBEX9x4Ho9Zn2QSkBk/I6y\n\
QR7/CCf0G+5z1mZn+nl9U+rgByT4cC228mDsIh8wTMH+rCwoUPewYnadW6afRs8s\n\
MtqbXgl56dQUL5KyNDWUOSRkVgVhnwIDAQABAoICAEc2Bd7/TFo6IBPPQg6BAcqq\n\
zs4OMvzDCRO6bMYLayKXZcYVQ9jFgpkqrXy+6K1dx49s+nzHAyNuEFia73KC2EYP\n\
MCRElb+XWKnNf0lCZbrb60s1NMqfVSQ16mbZMI28MYZvTtl12LqosZstGv49TnXd\n\
Z6wZcWHPJaVXQEQztHdz1cuYCpfuW4D8txyLu9XTpv60oHSK2VZRTzQGVRQ/OZCK\n\
vdITedwZRURSuSvS7xlL7M6qmCyp7weUArYbZ2230m8HMWRFOmSiX8luMJsI/Dcf\n\
T5J016/t+EReJvfqwgISuie2Sv4aM5rHTchsLhInYhGw7Xod5uEb+SulBAzs8I3F\n\
Wp8z5h8pHivSgij2rSX9lqkY3dzyeDVkhncFlZOaZbHLFApPdSXl6hIxMZRa+s+d\n\
zNZLUXzLH9/CGxkrTlcVjAOi+hUAmi9Yx9hzvWzVYAUDgAo1o+7o/neBhMt7h2IL\n\
iBpyuOFtFbSV8poljV7tuZQ4U54BKsbDQtYK03RWOISKHZgOwSMxNADG7X05nBrB\n\
WyK8YmmDiPrjrtb/25hUZpQUSa2vSd56PHT8+YuhX7X4s7Ui3WUdSnt0zXLZKzoi\n\
LCQ7k5qg45KATr+PIBFDM7Kj83Bj1craUUYRsv6XmEjgU+Uvr/ycpbQXlwtNAtI8\n\
k5dADJWiZJCT4ar1N2fxAoIBAQDeMGL7WXPvwITGtDqRNFwQnnhB9rJluk0rG5l3\n\
F8bIY4rbTZeh0wP9uZ1W8OEql30rVWM1HCCEd/1aZIlPm/UpRPhFf3CYmW9896iB\n\
b0+CV+F/APgH5+SoxjMUL5dq7M+8u5wodiDc6M/SwCYCvltaOcc75tBckWWaGO72\n\
tSuI0zo5wbHlitQteaAfTvTTlE8ctH02bzTqfxJsNnLRLXI/0HhGxM/AJ2Zo5oR6\n\
z2NwSrZXmFuatkYsrB1xfzxsm/gKRXZHDDNytw7TQ21V8FDJQqGY3i72jAJFTLH/\n\
CkH7bACN+2e3QGx2SnIFMHst2l3lLs+ftAzbH6owPOafZ/arAoIBAQDCMMxKEShq\n\
TJN+Fv9r1Psu1LqJ9wQ3R6eofdES/pGn0FhF6RPPa4XXX5HUDK4Y1jVUsmiy0y1R\n\
+4ZUaFWiVJiaDu5kE4d0bhR4tu3S2kCvXvPXrWGucSK8xJkdKnO2T/+wBm5EvW2B\n\
oLZEh3JA5aunHQ4OrVfAWbmOVHK9jUsLYKAxaRmc2Igwa8jQnJVsx64htd7MJLLM\n\
z3SpTHKCOANiCfJFnWluX81HSfKKKi4alMAPc/jO8yooqU8899VVK+oxvQyAulqB\n\
TfKUr6i0NF+7I1ByxJSI8yz+Ho6tmnRkA/sw+1WPfoK5a8bejU81eJ2o/XgBdTwg\n\
33Nu27R0kFDdAoIBAFBvOdX+Kx9XFXoNksowJ0gI5kYS9cAn8nmxkxvu6pJunr0H\n\
WOZHSsGWaWQo7YqKrtB6J+D5Hrh166zGioLcVaMsCai3Gt7TZO3bhg/daO4pvENK\n\
6X+LLlb+8UzUcb9OnWGYlU58fScbzOhhkSEbIl0GX57KzxFDvYFMl22OZoUw2npA\n\
KZOMb4VK63GKFs1lekJNAKstFP3zJIsyJtyc1ChP4srTwtWwLb25/amr3DaxhVMu\n\
n7LhW4QehsYopoo26FNnlAriWtmjdWV7mmArEEPbsD5z6JJuWwAVZLaMUxien5DG\n\
u2Q2mU01ZBOG2oDd9XHbQWRyPNkynFy8H00DyOMCggEAKX6r6JfJ/wzl52eapLwa\n\
AGPMiHaUHAvfs41PA7QKA8XtVuL7LLNZIjB1xM4A1aXQN4z3+l5NrNsGVTsGMW3K\n\
PgE6x3+0zhhHn5PXNdsVP2QWzttpqBDcz2FjJmxP1YE6ra5yGZYwtCZXTEV1EJED\n\
IO6Adnpr6dpCYDuDWSW8B25aTLScmHtcfpxJiOoss9XnS6TFOvIMkt8xmouPXGwD\n\
rQtbDa0ZPlCSWM1gWk2xFFT8xVCOtgoX1CB5ohmDKHP90ysGZOttM3wofcUbU4Zt\n\
fluJcTy4UJtF3fdBna8Hd+ex4UGTgtoRrPVuxVeEuXRQnC+tWQJoGs4kqGeiI9ZC\n\
sQKCAQAwRzOIrto/XyWyplYkRVo0sUM84qHXfPe6qE988a6crN8aBhxihwWjy8VY\n\
HtxfrTuuE+hpIyeeeuzosLmmWradZF1OhsEwLhiqLbWpB6p8J/ZYIRaw2kD2GijF\n\
ZwxfG3YZnP8fTkaa6h4Xibrnn53rJ9TSqCDxzEBSFyfc/xR7tNqKRGbQSsH3e0be\n\
AAFX16pB+RoCdkyHRLtGClvuV3A5Ye/F13UyV0nLLjppVXsUInM4ZRCkIXOUTvnr\n\
s3KnOvTl2mZH2mk4mmgPbUrQOIrWuNCqJ2Vms18EIH4BjjXgaKjeDl2B9f+pIkps\n\
DpejIx+6jDuYGK1U4NM05N87bvUL\n\
-----END PRIVATE KEY-----";

    /// The test key of `bits` bits, as `rsa` reads it.
    pub(crate) fn test_rsa_key(bits: usize) -> RsaPrivateKey {
        use rsa::pkcs8::DecodePrivateKey;
        let pem = match bits {
            2048 => crate::storage::gcp_auth::tests::TEST_KEY_PKCS8,
            3072 => TEST_KEY_3072,
            4096 => TEST_KEY_4096,
            _ => panic!("no {bits}-bit test key"),
        };
        let (_, der) = crate::storage::gcp_auth::tests::decode_test_pem(pem);
        RsaPrivateKey::from_pkcs8_der(&der).unwrap()
    }

    fn ours(key: &RsaPrivateKey) -> RsaKey {
        let primes = key.primes();
        RsaKey::from_components(
            &key.n().to_bytes_be(),
            &key.e().to_bytes_be(),
            &key.d().to_bytes_be(),
            &primes[0].to_bytes_be(),
            &primes[1].to_bytes_be(),
        )
        .unwrap()
    }

    #[test]
    fn digest_info_is_rsas_own() {
        assert_eq!(
            &*Pkcs1v15Sign::new::<Sha256>().prefix,
            &SHA256_DIGEST_INFO[..]
        );
    }

    /// Byte for byte what `rsa` signs, for each test key and many inputs.
    fn check_against_rsa(key: &RsaPrivateKey, bits: usize, messages: usize) {
        assert_eq!(key.n().bits(), bits);
        let our = ours(key);
        assert_eq!(our.size(), bits / 8);
        for i in 0..messages {
            let digest: [u8; 32] = Sha256::digest(format!("message {i}").as_bytes()).into();
            let expected = key.sign(Pkcs1v15Sign::new::<Sha256>(), &digest).unwrap();
            assert_eq!(
                our.sign_sha256(&digest).unwrap(),
                expected,
                "{bits} bits, #{i}"
            );
        }
    }

    #[test]
    fn refuses_numbers_that_do_not_fit() {
        use rsa::BigUint;
        let key = test_rsa_key(2048);
        let [p, q] = [&key.primes()[0], &key.primes()[1]].map(BigUint::to_bytes_be);
        let (n, e, d) = (
            key.n().to_bytes_be(),
            key.e().to_bytes_be(),
            key.d().to_bytes_be(),
        );
        assert!(RsaKey::from_components(&n, &e, &d, &p, &q).is_some());
        // Leading zero bytes (DER's sign byte) are fine.
        let padded = |b: &[u8]| [&[0u8, 0][..], b].concat();
        assert!(RsaKey::from_components(&padded(&n), &e, &padded(&d), &padded(&p), &q).is_some());
        let one_off = |b: &[u8]| {
            let mut b = b.to_vec();
            *b.last_mut().unwrap() ^= 2;
            b
        };
        let cases: [(&str, [Vec<u8>; 5]); 9] = [
            (
                "d",
                [n.clone(), e.clone(), one_off(&d), p.clone(), q.clone()],
            ),
            (
                "n",
                [one_off(&n), e.clone(), d.clone(), p.clone(), q.clone()],
            ),
            (
                "p",
                [n.clone(), e.clone(), d.clone(), one_off(&p), q.clone()],
            ),
            (
                "p = 1",
                [n.clone(), e.clone(), d.clone(), vec![1], n.clone()],
            ),
            (
                "e even",
                [n.clone(), vec![1, 0, 0], d.clone(), p.clone(), q.clone()],
            ),
            (
                "e = 1",
                [n.clone(), vec![1], d.clone(), p.clone(), q.clone()],
            ),
            (
                "e too big",
                [
                    n.clone(),
                    vec![4, 0, 0, 0, 1],
                    d.clone(),
                    p.clone(),
                    q.clone(),
                ],
            ),
            (
                "e > 8 bytes",
                [n.clone(), vec![1; 9], d.clone(), p.clone(), q.clone()],
            ),
            (
                "n even",
                [
                    [&n[..n.len() - 1], &[0]].concat(),
                    e.clone(),
                    d.clone(),
                    p.clone(),
                    q.clone(),
                ],
            ),
        ];
        for (what, [n, e, d, p, q]) in cases {
            assert!(
                RsaKey::from_components(&n, &e, &d, &p, &q).is_none(),
                "{what}"
            );
        }
        // A key that is too small for the encoding cannot sign.
        let tiny = RsaKey::from_components(&[0xbb], &[3], &[0x1b], &[11], &[17]).unwrap();
        assert_eq!(tiny.sign_sha256(&[0; 32]), None);
    }

    #[test]
    fn signs_like_rsa_2048() {
        check_against_rsa(&test_rsa_key(2048), 2048, 32);
    }

    #[test]
    fn signs_like_rsa_3072() {
        check_against_rsa(&test_rsa_key(3072), 3072, 8);
    }

    #[test]
    fn signs_like_rsa_4096() {
        check_against_rsa(&test_rsa_key(4096), 4096, 4);
    }
}
