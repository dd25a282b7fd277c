#include "auth/jwt.h"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <boost/json.hpp>

namespace parley {
namespace {

constexpr int64_t kNow = 1'700'000'000;
const std::string kSecret = "test-secret-0123456789";

std::string b64(std::string_view s) { return base64url_encode(s); }

// Hand-built HS256 token, for headers and claims sign() never produces.
std::string hs256_token(const std::string& header, const std::string& payload, const std::string& secret = kSecret) {
  std::string input = b64(header) + "." + b64(payload);
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), mac, &len);
  return input + "." + b64(std::string_view(reinterpret_cast<char*>(mac), len));
}

std::string claims(int64_t exp, const std::string& more = "") {
  return R"({"sub":"u1","exp":)" + std::to_string(exp) + more + "}";
}

std::shared_ptr<JwtVerifier> verifier(const std::string& secret = kSecret, const std::string& pem = "") {
  auto v = JwtVerifier::create(secret, pem);
  EXPECT_TRUE(v.ok()) << (v.ok() ? "" : v.error().message);
  return v.ok() ? *v : nullptr;
}

void expect_error(const Result<JwtClaims>& r, const std::string& code) {
  ASSERT_FALSE(r.ok()) << "accepted, expected " << code;
  EXPECT_EQ(r.error().kind, ErrorKind::kUnauthorized);
  EXPECT_EQ(r.error().code, code) << r.error().message;
}

// ---- OpenSSL helpers for provider-style RS256 / ES256 tokens ----

std::string public_pem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, key);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<size_t>(len));
  BIO_free(bio);
  return pem;
}

std::string digest_sign(EVP_PKEY* key, const std::string& input) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  size_t len = 0;
  std::string sig;
  if (EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key) == 1 &&
      EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1) {
    sig.resize(len);
    EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                   reinterpret_cast<const unsigned char*>(input.data()), input.size());
    sig.resize(len);
  }
  EVP_MD_CTX_free(ctx);
  return sig;
}

// DER ECDSA-Sig-Value -> the raw 64-byte r||s that JWS uses.
std::string der_to_raw(const std::string& der) {
  auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size()));
  std::string raw(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(sig), reinterpret_cast<unsigned char*>(raw.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
  ECDSA_SIG_free(sig);
  return raw;
}

class AsymmetricJwt : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
    ec_ = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  }
  static void TearDownTestSuite() {
    EVP_PKEY_free(rsa_);
    EVP_PKEY_free(ec_);
  }
  void SetUp() override {
    ASSERT_NE(rsa_, nullptr);
    ASSERT_NE(ec_, nullptr);
  }

  static std::string rs256(const std::string& payload, EVP_PKEY* key = rsa_) {
    std::string input = b64(R"({"alg":"RS256","typ":"JWT"})") + "." + b64(payload);
    return input + "." + b64(digest_sign(key, input));
  }
  static std::string es256(const std::string& payload, bool raw = true) {
    std::string input = b64(R"({"alg":"ES256","typ":"JWT"})") + "." + b64(payload);
    std::string der = digest_sign(ec_, input);
    return input + "." + b64(raw ? der_to_raw(der) : der);
  }

  static inline EVP_PKEY* rsa_ = nullptr;
  static inline EVP_PKEY* ec_ = nullptr;
};

// ---- HS256 ----

TEST(Jwt, SignVerifyRoundTrip) {
  auto v = verifier();
  boost::json::object extra{{"role", "admin"}, {"sub", "forged"}};
  std::string token = v->sign("user-1", kNow, 3600, extra);
  auto r = v->verify(token, kNow + 10);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->sub, "user-1");  // extra cannot override registered claims
  EXPECT_EQ(r->iat, kNow);
  EXPECT_EQ(r->exp, kNow + 3600);
  EXPECT_EQ(r->all.at("role").as_string(), "admin");
}

// The Authorization header's form, as apps that keep it send a bare token.
TEST(Jwt, BearerPrefixIsSkipped) {
  auto v = verifier();
  std::string token = v->sign("user-1", kNow, 3600);
  for (const std::string& given : {"Bearer " + token, "bearer " + token, "Bearer  " + token}) {  // RFC 6750: 1*SP
    auto r = v->verify(given, kNow + 10);
    ASSERT_TRUE(r.ok()) << given << ": " << r.error().message;
    EXPECT_EQ(r->sub, "user-1");
  }
  for (const std::string& given : {std::string("Bearer"), std::string("Bearer "), "Bearer Bearer " + token, "Basic " + token}) {
    auto r = v->verify(given, kNow + 10);
    ASSERT_FALSE(r.ok()) << given;
    EXPECT_EQ(r.error().code, "invalid_token") << given;
  }
}

TEST(Jwt, ExpiredAtExp) {
  auto v = verifier();
  std::string token = v->sign("u", kNow, 60, {});
  EXPECT_TRUE(v->verify(token, kNow + 59).ok());
  expect_error(v->verify(token, kNow + 60), "token_expired");
  expect_error(v->verify(token, kNow + 100000), "token_expired");
}

TEST(Jwt, ExpBeyondASaneHorizonIsInvalid) {
  auto v = verifier();
  const std::string header = R"({"alg":"HS256"})";
  for (const char* exp : {"9223372036854775807", "9223372036854775808", "18446744073709551615", "1e300"})
    expect_error(v->verify(hs256_token(header, R"({"sub":"u1","exp":)" + std::string(exp) + "}"), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(header, claims(kNow + int64_t{100} * 366 * 24 * 3600)), kNow), "invalid_token");
  // A long but sane lifetime (a year) is fine.
  EXPECT_TRUE(v->verify(hs256_token(header, claims(kNow + 366 * 24 * 3600)), kNow).ok());
}

TEST(Jwt, NotYetValid) {
  auto v = verifier();
  expect_error(v->verify(hs256_token(R"({"alg":"HS256"})", claims(kNow + 600, R"(,"nbf":)" + std::to_string(kNow + 100))), kNow),
               "invalid_token");
  // Within the skew it is accepted.
  EXPECT_TRUE(v->verify(hs256_token(R"({"alg":"HS256"})", claims(kNow + 600, R"(,"nbf":)" + std::to_string(kNow + 20))), kNow).ok());
  expect_error(v->verify(hs256_token(R"({"alg":"HS256"})", claims(kNow + 600, R"(,"nbf":"soon")")), kNow), "invalid_token");
}

TEST(Jwt, WrongSecretRejected) {
  std::string token = verifier("another-secret")->sign("u", kNow, 60, {});
  expect_error(verifier()->verify(token, kNow), "invalid_token");
}

TEST(Jwt, TamperedPayloadRejected) {
  auto v = verifier();
  std::string token = v->sign("alice", kNow, 60, {});
  size_t d1 = token.find('.'), d2 = token.rfind('.');
  std::string forged = token.substr(0, d1 + 1) + b64(claims(kNow + 60)) + token.substr(d2);
  expect_error(v->verify(forged, kNow), "invalid_token");
  // Flipping one signature character breaks it as well.
  std::string flipped = token;
  flipped[d2 + 1] = flipped[d2 + 1] == 'A' ? 'B' : 'A';
  expect_error(v->verify(flipped, kNow), "invalid_token");
}

TEST(Jwt, AlgNoneRejected) {
  auto v = verifier();
  for (std::string alg : {"none", "None", "NONE", "nOnE"}) {
    std::string token = b64(R"({"alg":")" + alg + R"("})") + "." + b64(claims(kNow + 60)) + ".";
    expect_error(v->verify(token, kNow), "invalid_token");
  }
}

TEST(Jwt, OtherAlgsRejected) {
  auto v = verifier();
  // Correct HS256 MACs, but the header names another algorithm.
  expect_error(v->verify(hs256_token(R"({"alg":"HS512"})", claims(kNow + 60)), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(R"({"alg":"hs256"})", claims(kNow + 60)), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(R"({"alg":"XY999"})", claims(kNow + 60)), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(R"({"typ":"JWT"})", claims(kNow + 60)), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(R"({"alg":256})", claims(kNow + 60)), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(R"({"alg":"HS256","crit":["exp"]})", claims(kNow + 60)), kNow), "invalid_token");
  // The same construction with the right header is accepted.
  EXPECT_TRUE(v->verify(hs256_token(R"({"alg":"HS256"})", claims(kNow + 60)), kNow).ok());
}

TEST(Jwt, MalformedRejected) {
  auto v = verifier();
  std::string good = v->sign("u", kNow, 60, {});
  expect_error(v->verify("", kNow), "invalid_token");
  expect_error(v->verify(good.substr(0, good.rfind('.')), kNow), "invalid_token");  // 2 parts
  expect_error(v->verify(good + ".x", kNow), "invalid_token");                        // 4 parts
  expect_error(v->verify("!!!." + good.substr(good.find('.') + 1), kNow), "invalid_token");
  expect_error(v->verify(good + "=", kNow), "invalid_token");
  expect_error(v->verify(hs256_token("not json", claims(kNow + 60)), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(R"(["alg","HS256"])", claims(kNow + 60)), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(R"({"alg":"HS256"})", "not json"), kNow), "invalid_token");
  // A correctly signed token over 8 KiB is still refused.
  std::string big = v->sign("u", kNow, 60, {{"pad", std::string(8000, 'x')}});
  ASSERT_GT(big.size(), 8192u);
  expect_error(v->verify(big, kNow), "invalid_token");
}

TEST(Jwt, ClaimsRequired) {
  auto v = verifier();
  std::string h = R"({"alg":"HS256"})";
  std::string exp = std::to_string(kNow + 60);
  expect_error(v->verify(hs256_token(h, R"({"exp":)" + exp + "}"), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(h, R"({"sub":"","exp":)" + exp + "}"), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(h, R"({"sub":42,"exp":)" + exp + "}"), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(h, R"({"sub":"u"})"), kNow), "invalid_token");
  expect_error(v->verify(hs256_token(h, R"({"sub":"u","exp":")" + exp + R"("})"), kNow), "invalid_token");
  // Fractional NumericDate is allowed by RFC 7519.
  auto r = v->verify(hs256_token(h, R"({"sub":"u","exp":)" + exp + ".5}"), kNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->exp, kNow + 60);
}

TEST(Jwt, CreateValidatesConfig) {
  EXPECT_FALSE(JwtVerifier::create("").ok());
  EXPECT_FALSE(JwtVerifier::create("s", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n").ok());
  EXPECT_FALSE(JwtVerifier::create("s", "garbage").ok());
}

// ---- RS256 / ES256 ----

TEST_F(AsymmetricJwt, Rs256Verified) {
  auto v = verifier(kSecret, public_pem(rsa_));
  auto r = v->verify(rs256(claims(kNow + 60, R"(,"email":"a@example.com")")), kNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->sub, "u1");
  EXPECT_EQ(r->all.at("email").as_string(), "a@example.com");
  expect_error(v->verify(rs256(claims(kNow - 100)), kNow), "token_expired");
  // HS256 still works beside the key.
  EXPECT_TRUE(v->verify(v->sign("u", kNow, 60, {}), kNow).ok());
}

TEST_F(AsymmetricJwt, Rs256WrongKeyRejected) {
  EVP_PKEY* other = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048));
  ASSERT_NE(other, nullptr);
  std::string token = rs256(claims(kNow + 60), other);
  EVP_PKEY_free(other);
  expect_error(verifier(kSecret, public_pem(rsa_))->verify(token, kNow), "invalid_token");
}

TEST_F(AsymmetricJwt, Rs256WithoutKeyRejected) {
  expect_error(verifier()->verify(rs256(claims(kNow + 60)), kNow), "invalid_token");
}

TEST_F(AsymmetricJwt, Es256Verified) {
  auto v = verifier(kSecret, public_pem(ec_));
  auto r = v->verify(es256(claims(kNow + 60)), kNow);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->sub, "u1");
  // JWS wants raw r||s; a DER signature is malformed.
  expect_error(v->verify(es256(claims(kNow + 60), false), kNow), "invalid_token");
  // Tampered payload.
  std::string token = es256(claims(kNow + 60));
  size_t d1 = token.find('.'), d2 = token.rfind('.');
  expect_error(v->verify(token.substr(0, d1 + 1) + b64(claims(kNow + 9999)) + token.substr(d2), kNow),
               "invalid_token");
}

TEST_F(AsymmetricJwt, AlgMustMatchKeyType) {
  // An RS256 token is not verified by an EC key and vice versa.
  expect_error(verifier(kSecret, public_pem(ec_))->verify(rs256(claims(kNow + 60)), kNow), "invalid_token");
  expect_error(verifier(kSecret, public_pem(rsa_))->verify(es256(claims(kNow + 60)), kNow), "invalid_token");
}

TEST_F(AsymmetricJwt, Hs256RelabelledAsRs256Rejected) {
  auto v = verifier(kSecret, public_pem(rsa_));
  std::string token = v->sign("u", kNow, 60, {});
  std::string relabelled = b64(R"({"alg":"RS256","typ":"JWT"})") + token.substr(token.find('.'));
  expect_error(v->verify(relabelled, kNow), "invalid_token");
  expect_error(verifier()->verify(relabelled, kNow), "invalid_token");
  // Even with a MAC that is valid for the RS256-labelled header, the secret
  // must never verify an RS256 token.
  std::string hmac_rs256 = hs256_token(R"({"alg":"RS256"})", claims(kNow + 60));
  expect_error(v->verify(hmac_rs256, kNow), "invalid_token");
  expect_error(verifier()->verify(hmac_rs256, kNow), "invalid_token");
  expect_error(verifier()->verify(hs256_token(R"({"alg":"ES256"})", claims(kNow + 60)), kNow), "invalid_token");
}

TEST_F(AsymmetricJwt, PublicKeyAsHmacSecretRejected) {
  // The classic key-confusion forgery: HS256 keyed with the public PEM.
  std::string pem = public_pem(rsa_);
  std::string forged = hs256_token(R"({"alg":"HS256"})", claims(kNow + 60), pem);
  expect_error(verifier(kSecret, pem)->verify(forged, kNow), "invalid_token");
}

// ---- base64url ----

TEST(Base64Url, KnownVectors) {
  EXPECT_EQ(base64url_encode(""), "");
  EXPECT_EQ(base64url_encode("f"), "Zg");
  EXPECT_EQ(base64url_encode("fo"), "Zm8");
  EXPECT_EQ(base64url_encode("foo"), "Zm9v");
  EXPECT_EQ(base64url_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
  EXPECT_EQ(base64url_decode("Zm9vYmE"), "fooba");
  EXPECT_EQ(base64url_decode("-_8"), "\xfb\xff");
  EXPECT_EQ(base64url_decode(""), "");
}

TEST(Base64Url, PaddingOptional) {
  EXPECT_EQ(base64url_decode("Zg"), "f");
  EXPECT_EQ(base64url_decode("Zg=="), "f");
  EXPECT_EQ(base64url_decode("Zm8="), "fo");
  EXPECT_FALSE(base64url_decode("Zg=").has_value());
  EXPECT_FALSE(base64url_decode("Z=g=").has_value());
}

TEST(Base64Url, InvalidRejected) {
  EXPECT_FALSE(base64url_decode("+/8").has_value());  // standard alphabet, not url
  EXPECT_FALSE(base64url_decode("Zm 9v").has_value());
  EXPECT_FALSE(base64url_decode("Zm9v.").has_value());
  EXPECT_FALSE(base64url_decode("Z").has_value());   // 6 bits cannot make a byte
  EXPECT_FALSE(base64url_decode("Zh").has_value());  // non-zero leftover bits
}

TEST(Base64Url, RoundTripAllBytes) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t n = 0; n <= all.size(); n += 37) {
    std::string s = all.substr(0, n);
    EXPECT_EQ(base64url_decode(base64url_encode(s)), s);
  }
}

}  // namespace
}  // namespace parley
