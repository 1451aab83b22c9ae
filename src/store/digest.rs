//! `Digest`: a parsed sha256 digest, so a bare string never stands for a pin.
//!
//! The one spelling is `sha256:<64 lower-case hex digits>`, the form OCI registries and
//! `kiln.lock` use. Parsing refuses every other spelling (upper case, another algorithm, a
//! missing prefix) with a message that says what is wrong, instead of normalizing it: a
//! lock file that says `SHA256:ABC...` was edited by hand, and the user should know.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// The only algorithm kiln pins with, and the prefix of every digest's string form.
const PREFIX: &str = "sha256:";
/// Length of a sha256 digest in hex digits.
const HEX_LENGTH: usize = 64;
/// Hashing reads this much at a time: large enough for sha2's SHA-NI path to run at full
/// speed, small enough that memory stays bounded whatever the blob's size.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// A sha256 digest. Display and `FromStr` form: `sha256:<64 lower-case hex digits>`;
/// serialized as that string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// 64 lower-case hex digits (so the derived ordering is the ordering of the bytes).
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `sha256:` prefix (or another algorithm's).
    #[error("`{input}` is not a sha256 digest: it must start with `sha256:` (kiln pins everything by sha256), e.g. `sha256:<64 hex digits>`")]
    MissingPrefix {
        /// The string as given.
        input: String,
    },
    /// The hex part does not have 64 digits.
    #[error("`{input}` is not a sha256 digest: it has {length} hex digits after `sha256:`, but a sha256 digest has 64; was it cut short when copied?")]
    WrongLength {
        /// The string as given.
        input: String,
        /// Number of characters after the prefix.
        length: usize,
    },
    /// The hex part holds a character that is not a hex digit.
    #[error("`{input}` is not a sha256 digest: `{character}` at position {position} after `sha256:` is not a hex digit (0-9, a-f)")]
    NotHex {
        /// The string as given.
        input: String,
        /// The offending character.
        character: char,
        /// Its position (in characters) after the prefix, counting from 0.
        position: usize,
    },
    /// The hex part is upper case.
    #[error("`{input}` is not a sha256 digest as kiln writes it: the hex digits must be lower case; write `sha256:{lower}`")]
    UpperCase {
        /// The string as given.
        input: String,
        /// The hex part in lower case, for the hint.
        lower: String,
    },
}

impl Digest {
    /// The 64 lower-case hex digits, without the `sha256:` prefix (the blob's file name).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of everything `reader` yields, read in 1 MiB chunks.
    pub(crate) fn of_reader(mut reader: impl Read) -> io::Result<(Digest, u64)> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            hasher.update(&buffer[..read]);
            size += read as u64;
        }
        Ok((Digest::from_hasher(hasher), size))
    }

    /// The digest a hasher has computed so far.
    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        let bytes = hasher.finalize();
        let mut hex = String::with_capacity(HEX_LENGTH);
        for byte in bytes {
            hex.push(char::from_digit(u32::from(byte >> 4), 16).expect("a nibble"));
            hex.push(char::from_digit(u32::from(byte & 0xf), 16).expect("a nibble"));
        }
        Digest { hex }
    }

    /// The digest whose hex part is `hex`, if `hex` is 64 lower-case hex digits (a blob's
    /// file name).
    pub(crate) fn from_hex(hex: &str) -> Option<Digest> {
        let valid = hex.len() == HEX_LENGTH
            && hex
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        valid.then(|| Digest {
            hex: hex.to_owned(),
        })
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(input: &str) -> Result<Digest, DigestError> {
        let Some(hex) = input.strip_prefix(PREFIX) else {
            return Err(DigestError::MissingPrefix {
                input: input.to_owned(),
            });
        };
        // Report a bad character before a bad length: `sha256:xyz` is wrong because of
        // the `x`, and saying "3 digits" would send the user looking for the rest.
        let mut upper = false;
        for (position, character) in hex.chars().enumerate() {
            match character {
                '0'..='9' | 'a'..='f' => {}
                'A'..='F' => upper = true,
                _ => {
                    return Err(DigestError::NotHex {
                        input: input.to_owned(),
                        character,
                        position,
                    })
                }
            }
        }
        if hex.len() != HEX_LENGTH {
            return Err(DigestError::WrongLength {
                input: input.to_owned(),
                length: hex.chars().count(),
            });
        }
        if upper {
            return Err(DigestError::UpperCase {
                input: input.to_owned(),
                lower: hex.to_ascii_lowercase(),
            });
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{PREFIX}{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256 of the empty string, a value anyone can check with `sha256sum </dev/null`.
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn of_bytes_matches_the_known_digest_of_nothing() {
        assert_eq!(Digest::of_bytes(b"").hex(), EMPTY);
        assert_eq!(Digest::of_bytes(b"").to_string(), format!("sha256:{EMPTY}"));
    }

    #[test]
    fn of_reader_agrees_with_of_bytes_across_chunks() {
        let bytes: Vec<u8> = (0..CHUNK * 2 + 7)
            .map(|index| (index % 251) as u8)
            .collect();
        let (digest, size) = Digest::of_reader(&bytes[..]).unwrap();
        assert_eq!(digest, Digest::of_bytes(&bytes));
        assert_eq!(size, bytes.len() as u64);
    }

    #[test]
    fn parses_its_own_display_form() {
        let digest: Digest = format!("sha256:{EMPTY}").parse().unwrap();
        assert_eq!(digest.hex(), EMPTY);
        assert_eq!(digest, Digest::of_bytes(b""));
    }

    #[test]
    fn refuses_a_missing_prefix() {
        let error = EMPTY.parse::<Digest>().unwrap_err();
        assert!(
            matches!(error, DigestError::MissingPrefix { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("must start with `sha256:`"));
        let error = format!("sha512:{EMPTY}").parse::<Digest>().unwrap_err();
        assert!(
            matches!(error, DigestError::MissingPrefix { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn refuses_a_wrong_length() {
        let error = format!("sha256:{}", &EMPTY[..63])
            .parse::<Digest>()
            .unwrap_err();
        assert_eq!(
            error,
            DigestError::WrongLength {
                input: format!("sha256:{}", &EMPTY[..63]),
                length: 63
            }
        );
        assert!(error.to_string().contains("63 hex digits"), "{error}");
        let error = format!("sha256:{EMPTY}0").parse::<Digest>().unwrap_err();
        assert!(
            matches!(error, DigestError::WrongLength { length: 65, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn refuses_a_character_that_is_not_hex() {
        let input = format!("sha256:{}g", &EMPTY[..63]);
        let error = input.parse::<Digest>().unwrap_err();
        assert_eq!(
            error,
            DigestError::NotHex {
                input,
                character: 'g',
                position: 63
            }
        );
        assert!(error.to_string().contains("`g` at position 63"), "{error}");
    }

    #[test]
    fn refuses_upper_case_and_shows_the_lower_case_form() {
        let input = format!("sha256:{}", EMPTY.to_ascii_uppercase());
        let error = input.parse::<Digest>().unwrap_err();
        assert!(matches!(error, DigestError::UpperCase { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains(&format!("write `sha256:{EMPTY}`")),
            "{error}"
        );
    }

    #[test]
    fn from_hex_accepts_only_blob_names() {
        assert_eq!(Digest::from_hex(EMPTY), Some(Digest::of_bytes(b"")));
        assert_eq!(Digest::from_hex(&EMPTY.to_ascii_uppercase()), None);
        assert_eq!(Digest::from_hex(&EMPTY[1..]), None);
        assert_eq!(Digest::from_hex("notes.txt"), None);
    }

    #[test]
    fn serde_uses_the_string_form() {
        let digest = Digest::of_bytes(b"");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"sha256:{EMPTY}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        let error = serde_json::from_str::<Digest>(&format!("\"{EMPTY}\"")).unwrap_err();
        assert!(
            error.to_string().contains("must start with `sha256:`"),
            "{error}"
        );
    }
}
