// Package token is the format of personal API tokens: it generates them,
// parses and checksums them, hashes them for storage, keys them by id and
// redacts them from text. It knows nothing of where tokens are stored.
//
// A token is one string:
//
//	<prefix>_<id><secret><checksum>
//
//	prefix    1 to 16 characters [a-z0-9], starting with a letter (DefaultPrefix is "caddytok")
//	id        12 characters of lowercase RFC 4648 base32 [a-z2-7]: 60 random bits, public
//	secret    43 characters of base62 [0-9A-Za-z]: 256 random bits, drawn from crypto/rand
//	          with rejection sampling so every character is uniform
//	checksum  6 characters of base62, the CRC-32 (IEEE) of "<prefix>_<id><secret>",
//	          most significant digit first, zero padded
//
// The body after the last '_' always has 61 characters, so a whole token is
// 63 to 78 bytes long. Secret scanners can match tokens with
//
//	\b[a-z][a-z0-9]{0,15}_[a-z2-7]{12}[0-9A-Za-z]{49}\b
//
// or, for the default prefix only, caddytok_[a-z2-7]{12}[0-9A-Za-z]{49}, and
// weed out false positives by recomputing the checksum as Parse does.
//
// Parse checks the shape and the checksum only, so a mistyped or truncated
// token is refused without a database look-up. The prefix is not needed to
// verify a token: the stored SHA-256 hash (Hash) covers the whole string.
// A store keeps only that hash; the secret is shown once.
package token
