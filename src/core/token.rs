//! Keys (PASERK), token verification, claims and their time checks.
//!
//! pasetors does the cryptography; everything around it is here: the 8 KiB bound
//! checked before any crypto, purpose separation (a `v4.public` token is never tried
//! against a local key), `kid` selection, and the claims rules with `now` and the
//! leeway passed in (pasetors' own validator reads the clock and has no leeway).

use std::borrow::Cow;
use std::fmt;

use ct_codecs::{Base64UrlSafeNoPadding, Decoder as _};
use pasetors::keys::{
    AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate, SymmetricKey,
};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::token::UntrustedToken as PasetoToken;
use pasetors::version4::{LocalToken, PublicToken, V4};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::time::{Rfc3339, parse_rfc3339, parse_rfc3339_parts, text_unless_canonical};

/// Longest token accepted, checked before any cryptography (`docs/protocol.md#tokens`).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

const LOCAL_PREFIX: &str = "v4.local.";
const PUBLIC_PREFIX: &str = "v4.public.";

/// Does this string look like a PASETO v4 token (by its header only)?
pub fn is_token_shaped(s: &str) -> bool {
    s.starts_with(LOCAL_PREFIX) || s.starts_with(PUBLIC_PREFIX)
}

/// The two kinds of PASETO v4 tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `v4.local`: XChaCha20 + BLAKE2b with a 32-byte symmetric key.
    Local,
    /// `v4.public`: Ed25519 signatures.
    Public,
}

/// A token as received, before any check. Its `Debug` and `Display` show only the
/// header, so it cannot leak into a log by accident.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UntrustedToken<'a>(pub &'a str);

impl fmt::Debug for UntrustedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for UntrustedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            t if t.starts_with(LOCAL_PREFIX) => f.write_str("v4.local.…"),
            t if t.starts_with(PUBLIC_PREFIX) => f.write_str("v4.public.…"),
            _ => f.write_str("<not a v4 token>"),
        }
    }
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a `k4.local.`, `k4.public.` or `k4.secret.` PASERK.
    UnknownType,
    /// The right type, but its base64 or length is wrong.
    Malformed(&'static str),
    /// A `k4.secret` whose Ed25519 seed is all zeros: refused (pasetors would panic,
    /// and such a key is public knowledge).
    WeakKey,
    /// The system random number generator failed.
    Random,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::UnknownType => {
                f.write_str("not a PASERK k4.local, k4.public or k4.secret key")
            }
            KeyError::Malformed(kind) => write!(f, "malformed {kind} key (bad base64 or length)"),
            KeyError::WeakKey => f.write_str("k4.secret key with an all-zero seed refused"),
            KeyError::Random => f.write_str("the system random number generator failed"),
        }
    }
}

impl std::error::Error for KeyError {}

enum Material {
    Local(SymmetricKey<V4>),
    Public(AsymmetricPublicKey<V4>),
    Secret(AsymmetricSecretKey<V4>, AsymmetricPublicKey<V4>),
}

/// A PASETO v4 key with its PASERK id. Prints no key bytes (`Debug` shows the id).
/// Secret key bytes are zeroized on drop by pasetors.
pub struct Key {
    material: Material,
    id: String,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

fn paserk(k: &dyn FormatAsPaserk) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = k.fmt(&mut s);
    s
}

impl Key {
    /// Parses a PASERK string (`k4.local.…`, `k4.public.…` or `k4.secret.…`);
    /// surrounding whitespace is ignored (key files may end in a newline).
    pub fn from_paserk(s: &str) -> Result<Key, KeyError> {
        let s = s.trim();
        let material = if s.starts_with("k4.local.") {
            Material::Local(SymmetricKey::try_from(s).map_err(|_| KeyError::Malformed("k4.local"))?)
        } else if s.starts_with("k4.public.") {
            Material::Public(
                AsymmetricPublicKey::try_from(s).map_err(|_| KeyError::Malformed("k4.public"))?,
            )
        } else if let Some(b64) = s.strip_prefix("k4.secret.") {
            let bytes = Zeroizing::new(
                Base64UrlSafeNoPadding::decode_to_vec(b64, None)
                    .map_err(|_| KeyError::Malformed("k4.secret"))?,
            );
            if bytes.len() != 64 {
                return Err(KeyError::Malformed("k4.secret"));
            }
            if bytes[..32].iter().all(|b| *b == 0) {
                return Err(KeyError::WeakKey);
            }
            let sk = AsymmetricSecretKey::<V4>::try_from(s)
                .map_err(|_| KeyError::Malformed("k4.secret"))?;
            let pk =
                AsymmetricPublicKey::try_from(&sk).map_err(|_| KeyError::Malformed("k4.secret"))?;
            Material::Secret(sk, pk)
        } else {
            return Err(KeyError::UnknownType);
        };
        Ok(Key::new(material))
    }

    fn new(material: Material) -> Key {
        let id = match &material {
            Material::Local(k) => paserk(&Id::from(k)),
            Material::Public(pk) | Material::Secret(_, pk) => paserk(&Id::from(pk)),
        };
        Key { material, id }
    }

    /// A fresh random `k4.local` key.
    pub fn generate_local() -> Result<Key, KeyError> {
        let k = SymmetricKey::<V4>::generate().map_err(|_| KeyError::Random)?;
        Ok(Key::new(Material::Local(k)))
    }

    /// A fresh Ed25519 key pair, as the secret key (which can also verify).
    pub fn generate_secret() -> Result<Key, KeyError> {
        let pair = AsymmetricKeyPair::<V4>::generate().map_err(|_| KeyError::Random)?;
        Ok(Key::new(Material::Secret(pair.secret, pair.public)))
    }

    /// The PASERK id that token footers name in `kid`: `k4.lid.…` for a local key,
    /// `k4.pid.…` for a public or secret key (the id of its public half).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which tokens this key verifies.
    pub fn purpose(&self) -> Purpose {
        match self.material {
            Material::Local(_) => Purpose::Local,
            _ => Purpose::Public,
        }
    }

    /// Whether this key can mint tokens (`k4.local` or `k4.secret`).
    pub fn can_issue(&self) -> bool {
        !matches!(self.material, Material::Public(_))
    }

    /// The key as PASERK. Secret for `k4.local` and `k4.secret`: the buffer is zeroized
    /// on drop; never log it.
    pub fn to_paserk(&self) -> Zeroizing<String> {
        Zeroizing::new(match &self.material {
            Material::Local(k) => paserk(k),
            Material::Public(pk) => paserk(pk),
            Material::Secret(sk, _) => paserk(sk),
        })
    }

    /// The public half of a secret key as its own key (`k4.public`).
    pub fn public_key(&self) -> Option<Key> {
        match &self.material {
            Material::Secret(_, pk) | Material::Public(pk) => {
                AsymmetricPublicKey::from(pk.as_bytes())
                    .ok()
                    .map(|pk| Key::new(Material::Public(pk)))
            }
            Material::Local(_) => None,
        }
    }

    /// Mints a token over `claims_json` with the footer `{"kid":"<id>"}`.
    pub fn issue(&self, claims_json: &str) -> Result<String, TokenError> {
        let footer = format!(r#"{{"kid":"{}"}}"#, self.id);
        self.issue_with_footer(claims_json, Some(footer.as_bytes()))
    }

    /// Mints a token with any footer, or none (the tickets of `Gate::mint_ticket`).
    pub(crate) fn issue_with_footer(
        &self,
        claims_json: &str,
        footer: Option<&[u8]>,
    ) -> Result<String, TokenError> {
        let made = match &self.material {
            Material::Local(k) => LocalToken::encrypt(k, claims_json.as_bytes(), footer, None),
            Material::Secret(sk, _) => PublicToken::sign(sk, claims_json.as_bytes(), footer, None),
            Material::Public(_) => return Err(TokenError::NoKeyForPurpose),
        };
        made.map_err(|_| TokenError::Malformed)
    }

    /// Checks the cryptography of `token` with this key alone and returns the payload.
    /// `implicit` is the PASETO implicit assertion (wsgate itself uses none).
    pub fn open(&self, token: &str, implicit: &[u8]) -> Result<String, TokenError> {
        let parsed = Parsed::new(token).ok_or(TokenError::NoKeyForPurpose)??;
        self.open_parsed(&parsed, implicit)
    }

    fn open_parsed(&self, token: &Parsed, implicit: &[u8]) -> Result<String, TokenError> {
        let implicit = (!implicit.is_empty()).then_some(implicit);
        let opened = match (&self.material, token) {
            (Material::Local(k), Parsed::Local(t)) => LocalToken::decrypt(k, t, None, implicit),
            (Material::Public(pk) | Material::Secret(_, pk), Parsed::Public(t)) => {
                PublicToken::verify(pk, t, None, implicit)
            }
            _ => return Err(TokenError::NoKeyForPurpose),
        };
        match opened {
            Ok(t) => Ok(t.payload().to_owned()),
            Err(pasetors::errors::Error::PayloadInvalidUtf8) => Err(TokenError::BadClaims),
            Err(_) => Err(TokenError::Forged),
        }
    }
}

/// A token split and base64-decoded once (payload and footer) by pasetors, before
/// any key is tried: the footer's `kid` and every candidate key use the same parse.
enum Parsed {
    Local(PasetoToken<pasetors::token::Local, V4>),
    Public(PasetoToken<pasetors::token::Public, V4>),
}

impl Parsed {
    /// `None` when `token` is neither `v4.local.` nor `v4.public.`; `Some(Err)` when
    /// it is malformed (parts, base64, length).
    fn new(token: &str) -> Option<Result<Parsed, TokenError>> {
        let parsed = if token.starts_with(LOCAL_PREFIX) {
            PasetoToken::try_from(token).map(Parsed::Local)
        } else if token.starts_with(PUBLIC_PREFIX) {
            PasetoToken::try_from(token).map(Parsed::Public)
        } else {
            return None;
        };
        Some(parsed.map_err(|_| TokenError::Malformed))
    }

    /// The decoded footer (empty when there is none).
    fn footer(&self) -> &[u8] {
        match self {
            Parsed::Local(t) => t.untrusted_footer(),
            Parsed::Public(t) => t.untrusted_footer(),
        }
    }
}

/// Why a token was refused. `Display` is the operator's one-line reason; it never
/// contains the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Present but empty.
    Empty,
    /// Longer than 8 KiB; refused before any cryptography.
    TooLong,
    /// Holds bytes outside visible ASCII.
    NotVisibleAscii,
    /// Not `v4.local.` / `v4.public.`, or bad base64, or wrong length.
    Malformed,
    /// No loaded key of the token's purpose (purpose confusion is never attempted).
    NoKeyForPurpose,
    /// The footer `kid` names no loaded key.
    UnknownKid,
    /// The footer is JSON but not an object, or its `kid` is not a string.
    BadFooter,
    /// Authentication tag or signature did not verify under any candidate key.
    Forged,
    /// The payload is not a JSON object of registered claims with the right types.
    BadClaims,
    /// No `exp` claim.
    MissingExp,
    /// No `sub` claim.
    MissingSub,
    /// `sub` is empty or holds control characters: no identity to hand on.
    BadSub,
    /// `exp` (+ leeway) has passed.
    Expired,
    /// `nbf` (- leeway) has not come yet.
    NotYetValid,
    /// `iat` is further in the future than the leeway.
    IssuedInFuture,
    /// `aud` does not match the configured audience.
    WrongAudience,
    /// `iss` does not match the configured issuer.
    WrongIssuer,
}

impl TokenError {
    /// A short `snake_case` name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Empty => "empty",
            TokenError::TooLong => "too_long",
            TokenError::NotVisibleAscii => "not_visible_ascii",
            TokenError::Malformed => "malformed",
            TokenError::NoKeyForPurpose => "no_key_for_purpose",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::BadFooter => "bad_footer",
            TokenError::Forged => "bad_signature",
            TokenError::BadClaims => "bad_claims",
            TokenError::MissingExp => "missing_exp",
            TokenError::MissingSub => "missing_sub",
            TokenError::BadSub => "bad_sub",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::WrongIssuer => "wrong_issuer",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Empty => "token is empty",
            TokenError::TooLong => "token is longer than 8 KiB",
            TokenError::NotVisibleAscii => "token holds bytes outside visible ASCII",
            TokenError::Malformed => "token is not a well-formed PASETO v4 token",
            TokenError::NoKeyForPurpose => "no loaded key of the token's purpose (local/public)",
            TokenError::UnknownKid => "footer kid names no loaded key",
            TokenError::BadFooter => "footer is JSON but not an object with a string kid",
            TokenError::Forged => "tag or signature does not verify with any loaded key",
            TokenError::BadClaims => "claims are not a JSON object of PASETO registered claims",
            TokenError::MissingExp => "token has no exp claim",
            TokenError::MissingSub => "token has no sub claim",
            TokenError::BadSub => "sub is empty or holds control characters",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not valid yet (nbf)",
            TokenError::IssuedInFuture => "token issued in the future (iat)",
            TokenError::WrongAudience => "aud does not match",
            TokenError::WrongIssuer => "iss does not match",
        })
    }
}

impl std::error::Error for TokenError {}

/// `aud`: a string or (JWT habit) an array of strings. Deserialized by hand: serde's
/// `untagged` would buffer the value first, at a cost in code size and time.
enum Audience<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Audience<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Audience::One(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Audience::One(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(a) = seq.next_element::<BorrowedOrOwned<'a>>()? {
                    all.push(a.0);
                }
                Ok(Audience::Many(all))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A string, borrowed from the claims when it has no escapes.
#[derive(Deserialize)]
struct BorrowedOrOwned<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct RawClaims<'a> {
    #[serde(borrow, default)]
    sub: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    exp: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    nbf: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    iat: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    aud: Option<Audience<'a>>,
    #[serde(borrow, default)]
    iss: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    jti: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    wsgate_ticket: Option<RawTicket<'a>>,
}

#[derive(Deserialize)]
struct RawTicket<'a> {
    #[serde(borrow)]
    ip: Cow<'a, str>,
    #[serde(borrow)]
    session_exp: TicketTime<'a>,
    #[serde(borrow, default)]
    jti: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    iat: Option<TicketTime<'a>>,
}

/// A time in the ticket claim: Unix seconds, as wsgate writes it (10 bytes where RFC
/// 3339 text takes 22: each byte of a ticket is sealed, base64-encoded and decoded,
/// ~140 instructions), or RFC 3339 text, as versions before 2026-12-07 wrote it, so
/// that nodes of both read each other's tickets during an upgrade.
enum TicketTime<'a> {
    Unix(i64),
    Text(Cow<'a, str>),
}

impl TicketTime<'_> {
    fn unix(&self) -> Result<i64, TokenError> {
        match self {
            TicketTime::Unix(t) => Ok(*t),
            TicketTime::Text(s) => parse_rfc3339(s).ok_or(TokenError::BadClaims),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TicketTime<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TicketTime<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("Unix seconds or an RFC 3339 time")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TicketTime::Unix(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                i64::try_from(v)
                    .map(TicketTime::Unix)
                    .map_err(|_| E::custom("time out of range"))
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(TicketTime::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TicketTime::Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Name of the claim that marks a wsgate ticket: `{"ip": "...", "session_exp": <Unix
/// seconds>, "jti": "...", "iat": <Unix seconds>}` (the last two: the minting token's,
/// when it had them; the times may also be RFC 3339 text, as earlier versions wrote).
pub const TICKET_CLAIM: &str = "wsgate_ticket";

/// What a ticket carries beyond an ordinary token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketClaims {
    /// The IP address of the client that fetched the ticket (as text).
    pub ip: String,
    /// `exp` of the token that minted the ticket (Unix seconds): the session's end.
    pub session_exp: i64,
    /// Its text as issued, when not the form `Rfc3339` writes ([`Claims::exp_text`]).
    pub session_exp_text: Option<Box<str>>,
    /// `jti` of the token that minted the ticket: revocation looks at it.
    pub minted_by_jti: Option<String>,
    /// `iat` of the token that minted the ticket (Unix seconds): revocation looks at it.
    pub minted_by_iat: Option<i64>,
}

/// Claims of a verified token. `json` is the payload exactly as signed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Claims {
    /// `sub`: the identity.
    pub sub: String,
    /// `exp` in Unix seconds.
    pub exp: i64,
    /// `exp` as issued, when its text is not the form [`crate::internal::Rfc3339`] writes
    /// (a fraction, an offset): frames and listings show it as the token has it.
    pub exp_text: Option<Box<str>>,
    /// `jti`, if any.
    pub jti: Option<String>,
    /// `iat` in Unix seconds, if any.
    pub iat: Option<i64>,
    /// Present when the token is a wsgate ticket.
    pub(crate) ticket: Option<TicketClaims>,
    /// The whole claims JSON object.
    pub json: String,
}

/// The rules a token's claims must meet. `leeway` applies to `exp`, `nbf`, `iat`
/// of ordinary tokens; tickets get none on their own `exp` (the server minted them).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ClaimRules {
    /// Allowed clock skew in seconds.
    pub leeway: i64,
    /// When set, `aud` must equal it (or be an array holding it).
    pub audience: Option<String>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
}

fn time_claim(v: &Option<Cow<'_, str>>) -> Result<Option<i64>, TokenError> {
    match v {
        None => Ok(None),
        Some(s) => parse_rfc3339(s).map(Some).ok_or(TokenError::BadClaims),
    }
}

/// `iat`: its whole second, and the first whole second at or after it (a `sub`
/// revocation refuses the tokens issued at or before its whole second, and
/// `12:00:00.5` is after `12:00:00`: `docs/protocol.md#revocation`).
fn issued_at(v: &Option<Cow<'_, str>>) -> Result<Option<(i64, i64)>, TokenError> {
    match v {
        None => Ok(None),
        Some(s) => parse_rfc3339_parts(s)
            .map(|(secs, fraction)| Some((secs, secs + i64::from(fraction))))
            .ok_or(TokenError::BadClaims),
    }
}

impl ClaimRules {
    /// Rules with `leeway` seconds of clock skew and no `aud` or `iss` required (set
    /// [`ClaimRules::audience`] and [`ClaimRules::issuer`] for those).
    pub fn new(leeway: i64) -> ClaimRules {
        ClaimRules {
            leeway,
            ..ClaimRules::default()
        }
    }

    /// Parses `payload` and applies the rules at `now` (Unix seconds).
    pub fn check(&self, payload: String, now: i64) -> Result<Claims, TokenError> {
        // serde would also read a struct from a JSON array: claims must be an object.
        if !payload.trim_start().starts_with('{') {
            return Err(TokenError::BadClaims);
        }
        let raw: RawClaims<'_> =
            serde_json::from_str(&payload).map_err(|_| TokenError::BadClaims)?;
        let exp = time_claim(&raw.exp)?.ok_or(TokenError::MissingExp)?;
        let exp_text = raw.exp.as_deref().and_then(text_unless_canonical);
        let nbf = time_claim(&raw.nbf)?;
        let issued = issued_at(&raw.iat)?;
        let ticket = match &raw.wsgate_ticket {
            None => None,
            Some(t) => Some(TicketClaims {
                ip: t.ip.clone().into_owned(),
                session_exp: t.session_exp.unix()?,
                session_exp_text: match &t.session_exp {
                    TicketTime::Text(s) => text_unless_canonical(s),
                    TicketTime::Unix(_) => None,
                },
                minted_by_jti: t.jti.as_deref().map(str::to_owned),
                minted_by_iat: t.iat.as_ref().map(TicketTime::unix).transpose()?,
            }),
        };
        let leeway = self.leeway;
        let exp_leeway = if ticket.is_some() { 0 } else { leeway };
        if now > exp.saturating_add(exp_leeway) {
            return Err(TokenError::Expired);
        }
        if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(TokenError::NotYetValid);
        }
        // The leeway as for `nbf`, on `iat`'s whole second (rounded up for revocation
        // only).
        if issued.is_some_and(|(iat, _)| now.saturating_add(leeway) < iat) {
            return Err(TokenError::IssuedInFuture);
        }
        if let Some(want) = &self.audience {
            let ok = match &raw.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(all)) => all.iter().any(|a| a == want),
                None => false,
            };
            if !ok {
                return Err(TokenError::WrongAudience);
            }
        }
        if let Some(want) = &self.issuer {
            if raw.iss.as_deref() != Some(want.as_str()) {
                return Err(TokenError::WrongIssuer);
            }
        }
        let sub = raw.sub.ok_or(TokenError::MissingSub)?.into_owned();
        // The identity handed on (headers, environment, logs): never empty, never a
        // control character (a NUL cannot even be an environment variable).
        if sub.is_empty() || sub.chars().any(char::is_control) {
            return Err(TokenError::BadSub);
        }
        let jti = raw.jti.map(Cow::into_owned);
        drop(raw.aud);
        Ok(Claims {
            sub,
            exp,
            exp_text,
            jti,
            iat: issued.map(|(_, up)| up),
            ticket,
            json: payload,
        })
    }
}

/// A JSON footer: an object whose other members (PASETO's `wpk`, an application's own)
/// are ignored; without `kid`, every key of the purpose is tried.
#[derive(Deserialize)]
struct Footer<'a> {
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
}

/// The loaded keys, in the order given, and the claim rules: all that is needed
/// to turn an [`UntrustedToken`] into [`Claims`].
#[derive(Debug, Default)]
pub struct Verifier {
    keys: Vec<Key>,
    rules: ClaimRules,
}

impl Verifier {
    /// A verifier over `keys` (tried in this order when a token has no `kid`).
    pub fn new(keys: Vec<Key>, rules: ClaimRules) -> Verifier {
        Verifier { keys, rules }
    }

    /// The loaded keys.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Adds a key at the end of the try order.
    pub(crate) fn push_key(&mut self, key: Key) {
        self.keys.push(key);
    }

    /// The claim rules.
    pub fn rules(&self) -> &ClaimRules {
        &self.rules
    }

    /// Verifies the token's cryptography and claims at `now`.
    pub fn verify(&self, token: UntrustedToken<'_>, now: i64) -> Result<Claims, TokenError> {
        let payload = self.open(token, b"")?;
        self.rules.check(payload, now)
    }

    /// The cryptographic half of [`Verifier::verify`]: bounds, purpose, `kid`
    /// selection, then pasetors. Returns the payload unchecked.
    pub fn open(&self, token: UntrustedToken<'_>, implicit: &[u8]) -> Result<String, TokenError> {
        let t = token.0;
        if t.is_empty() {
            return Err(TokenError::Empty);
        }
        if t.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        // A token that opens is base64url between its dots, so visible ASCII: the scan
        // (~7 instructions a byte) is made only for a token refused, whose reason it
        // then is, as if it had been made first.
        self.open_visible(t, implicit).map_err(|e| {
            if t.bytes().all(|b| b.is_ascii_graphic()) {
                e
            } else {
                TokenError::NotVisibleAscii
            }
        })
    }

    fn open_visible(&self, t: &str, implicit: &[u8]) -> Result<String, TokenError> {
        // An empty footer is written without its `.`: one token, one spelling.
        if t.ends_with('.') {
            return Err(TokenError::Malformed);
        }
        let purpose = if t.starts_with(LOCAL_PREFIX) {
            Purpose::Local
        } else if t.starts_with(PUBLIC_PREFIX) {
            Purpose::Public
        } else {
            return Err(TokenError::Malformed);
        };
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.purpose() == purpose)
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::NoKeyForPurpose);
        }
        let parsed = Parsed::new(t).ok_or(TokenError::Malformed)??;
        if let Some(kid) = footer_kid(parsed.footer())? {
            let key = self
                .keys
                .iter()
                .find(|k| k.id() == kid)
                .ok_or(TokenError::UnknownKid)?;
            if key.purpose() != purpose {
                return Err(TokenError::UnknownKid);
            }
            return key.open_parsed(&parsed, implicit);
        }
        let mut last = TokenError::Forged;
        for key in candidates {
            match key.open_parsed(&parsed, implicit) {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The `kid` of a token's decoded footer, when the footer is a JSON object that has
/// one. A footer that is not JSON (PASETO allows any) carries no `kid`.
fn footer_kid(footer: &[u8]) -> Result<Option<Cow<'_, str>>, TokenError> {
    if footer.first() != Some(&b'{') {
        // JSON that is not an object (`[1,2]`, `"x"`, `7`) is a footer we cannot read.
        let json = std::str::from_utf8(footer)
            .is_ok_and(|f| serde_json::from_str::<serde::de::IgnoredAny>(f).is_ok());
        return if json {
            Err(TokenError::BadFooter)
        } else {
            Ok(None)
        };
    }
    // `from_str`, as for the claims: one copy of serde_json's parser in the binary.
    let footer = std::str::from_utf8(footer).map_err(|_| TokenError::BadFooter)?;
    let f: Footer<'_> = serde_json::from_str(footer).map_err(|_| TokenError::BadFooter)?;
    Ok(f.kid)
}

/// Writes the members of the claims object `json` whose names are not in `skip`, each
/// as `"name":value,`, in their order (a ticket copies the minting token's claims
/// this way: no map of them is built, sorted and dropped).
pub(crate) fn copy_claims_except(
    json: &str,
    skip: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), TokenError> {
    struct Copy<'o, 's> {
        skip: &'s [&'s str],
        out: &'o mut Vec<u8>,
    }
    impl<'de> serde::de::DeserializeSeed<'de> for Copy<'_, '_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> serde::de::Visitor<'de> for Copy<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            use serde::de::Error as _;
            while let Some(BorrowedOrOwned(name)) = map.next_key()? {
                if self.skip.contains(&&*name) {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
                let value: serde_json::Value = map.next_value()?;
                serde_json::to_writer(&mut *self.out, &*name).map_err(A::Error::custom)?;
                self.out.push(b':');
                serde_json::to_writer(&mut *self.out, &value).map_err(A::Error::custom)?;
                self.out.push(b',');
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    serde::de::DeserializeSeed::deserialize(Copy { skip, out }, &mut de)
        .map_err(|_| TokenError::BadClaims)
}

/// Builds a claims JSON object for `issue`: `sub`, `exp` = now + ttl, `iat` = now,
/// optional `aud`, `iss`, `jti`, and extra string claims (which may not replace those).
pub fn claims_json(
    sub: &str,
    now: i64,
    ttl: i64,
    aud: Option<&str>,
    iss: Option<&str>,
    jti: Option<&str>,
    extra: &[(String, String)],
) -> String {
    let mut m = serde_json::Map::new();
    for (k, v) in extra {
        m.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    let s = |v: &str| serde_json::Value::String(v.to_owned());
    m.insert("sub".into(), s(sub));
    m.insert("iat".into(), s(&Rfc3339(now).to_string()));
    m.insert(
        "exp".into(),
        s(&Rfc3339(now.saturating_add(ttl)).to_string()),
    );
    if let Some(a) = aud {
        m.insert("aud".into(), s(a));
    }
    if let Some(i) = iss {
        m.insert("iss".into(), s(i));
    }
    if let Some(j) = jti {
        m.insert("jti".into(), s(j));
    }
    serde_json::Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 2_000_000_000;

    fn local() -> Key {
        Key::generate_local().unwrap()
    }

    fn claims(exp: i64) -> String {
        format!(r#"{{"sub":"alice","exp":"{}"}}"#, Rfc3339(exp))
    }

    fn verifier(keys: Vec<Key>) -> Verifier {
        Verifier::new(
            keys,
            ClaimRules {
                leeway: 60,
                ..ClaimRules::default()
            },
        )
    }

    #[test]
    fn local_and_public_round_trip() {
        let l = local();
        let s = Key::generate_secret().unwrap();
        let p = s.public_key().unwrap();
        let tl = l.issue(&claims(NOW + 100)).unwrap();
        let tp = s.issue(&claims(NOW + 100)).unwrap();
        let v = verifier(vec![l, p]);
        assert_eq!(v.verify(UntrustedToken(&tl), NOW).unwrap().sub, "alice");
        assert_eq!(v.verify(UntrustedToken(&tp), NOW).unwrap().exp, NOW + 100);
    }

    /// The visible-ASCII scan runs only when a token is refused: a byte outside
    /// visible ASCII anywhere in a valid token (prefix, payload, footer, each dot) is
    /// still refused for that reason, for both purposes.
    #[test]
    fn a_byte_outside_visible_ascii_is_the_reason_wherever_it_is() {
        let l = local();
        let s = Key::generate_secret().unwrap();
        let tl = l.issue(&claims(NOW + 100)).unwrap();
        let tp = s.issue(&claims(NOW + 100)).unwrap();
        let v = verifier(vec![l, s.public_key().unwrap()]);
        for t in [tl, tp] {
            for i in 0..t.len() {
                for bad in ["\u{1}", " ", "\u{e9}"] {
                    let mut forged = t.clone();
                    forged.replace_range(i..i + 1, bad);
                    assert_eq!(
                        v.verify(UntrustedToken(&forged), NOW),
                        Err(TokenError::NotVisibleAscii),
                        "{bad:?} at {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn purpose_confusion_is_not_attempted() {
        let s = Key::generate_secret().unwrap();
        let t = s.issue(&claims(NOW + 100)).unwrap();
        let v = verifier(vec![local()]);
        assert_eq!(
            v.verify(UntrustedToken(&t), NOW),
            Err(TokenError::NoKeyForPurpose)
        );
    }

    #[test]
    fn kid_selects_and_unknown_kid_fails() {
        let (a, b) = (local(), local());
        let tb = b.issue(&claims(NOW + 100)).unwrap();
        let v = verifier(vec![a, b]);
        assert!(v.verify(UntrustedToken(&tb), NOW).is_ok());
        let other = local().issue(&claims(NOW + 100)).unwrap();
        assert_eq!(
            v.verify(UntrustedToken(&other), NOW),
            Err(TokenError::UnknownKid)
        );
        // Without kid: every key of the purpose is tried, a foreign key fails.
        let nokid = local().issue_with_footer(&claims(NOW + 100), None).unwrap();
        assert_eq!(
            v.verify(UntrustedToken(&nokid), NOW),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn no_kid_tries_keys_in_order() {
        let (a, b) = (local(), local());
        let t = b.issue_with_footer(&claims(NOW + 100), None).unwrap();
        let v = verifier(vec![a, b]);
        assert!(v.verify(UntrustedToken(&t), NOW).is_ok());
    }

    #[test]
    fn sub_must_be_a_usable_identity() {
        let k = local();
        let v = verifier(vec![Key::from_paserk(&k.to_paserk()).unwrap()]);
        let exp = Rfc3339(NOW + 500);
        for (sub, want) in [
            (r#""""#, Err(TokenError::BadSub)),
            (r#""a\u0000b""#, Err(TokenError::BadSub)),
            (r#""line\nbreak""#, Err(TokenError::BadSub)),
            (r#""\u007f""#, Err(TokenError::BadSub)),
            (r#""Zoë Smith""#, Ok(())),
            (r#"" ""#, Ok(())),
        ] {
            let t = k
                .issue(&format!(r#"{{"sub":{sub},"exp":"{exp}"}}"#))
                .unwrap();
            assert_eq!(v.verify(UntrustedToken(&t), NOW).map(|_| ()), want, "{sub}");
        }
    }

    #[test]
    fn one_spelling_per_token_and_only_object_footers() {
        let l = local();
        let p = Key::generate_secret().unwrap();
        let v = verifier(vec![
            Key::from_paserk(&l.to_paserk()).unwrap(),
            p.public_key().unwrap(),
        ]);
        let c = claims(NOW + 500);
        for k in [&l, &p] {
            let t = k.issue_with_footer(&c, None).unwrap();
            assert!(v.verify(UntrustedToken(&t), NOW).is_ok());
            // The same token with an empty footer's `.`: refused, not a second spelling.
            let dotted = format!("{t}.");
            assert_eq!(
                v.verify(UntrustedToken(&dotted), NOW).map(|_| ()),
                Err(TokenError::Malformed)
            );
            for footer in [&b"[1,2]"[..], b"\"k4.lid\"", b"7", b"null"] {
                let t = k.issue_with_footer(&c, Some(footer)).unwrap();
                assert_eq!(
                    v.verify(UntrustedToken(&t), NOW).map(|_| ()),
                    Err(TokenError::BadFooter),
                    "{}",
                    String::from_utf8_lossy(footer)
                );
            }
            // An object without a kid (another library's footer): every key is tried.
            for footer in [&b"{}"[..], br#"{"wpk":"k4.local-wrap.pie.x"}"#] {
                let t = k.issue_with_footer(&c, Some(footer)).unwrap();
                assert!(v.verify(UntrustedToken(&t), NOW).is_ok());
            }
            let t = k.issue_with_footer(&c, Some(br#"{"kid":7}"#)).unwrap();
            assert_eq!(
                v.verify(UntrustedToken(&t), NOW).map(|_| ()),
                Err(TokenError::BadFooter)
            );
            // A footer that is not JSON at all is PASETO's business, not a kid.
            let t = k.issue_with_footer(&c, Some(b"plain text")).unwrap();
            assert!(v.verify(UntrustedToken(&t), NOW).is_ok());
        }
    }

    #[test]
    fn time_rules_with_leeway() {
        let k = local();
        let t = |c: String| k.issue(&c).unwrap();
        let v = verifier(vec![local()]);
        drop(v);
        let tokens = [
            (t(claims(NOW - 59)), Ok(())),
            (t(claims(NOW - 61)), Err(TokenError::Expired)),
            (
                t(format!(
                    r#"{{"sub":"a","exp":"{}","nbf":"{}"}}"#,
                    Rfc3339(NOW + 500),
                    Rfc3339(NOW + 59)
                )),
                Ok(()),
            ),
            (
                t(format!(
                    r#"{{"sub":"a","exp":"{}","nbf":"{}"}}"#,
                    Rfc3339(NOW + 500),
                    Rfc3339(NOW + 61)
                )),
                Err(TokenError::NotYetValid),
            ),
            (
                t(format!(
                    r#"{{"sub":"a","exp":"{}","iat":"{}"}}"#,
                    Rfc3339(NOW + 500),
                    Rfc3339(NOW + 61)
                )),
                Err(TokenError::IssuedInFuture),
            ),
            // The leeway on `iat`'s whole second, as on `nbf`'s: 60.5 s ahead passes.
            (
                t(format!(
                    r#"{{"sub":"a","exp":"{}","iat":"{}"}}"#,
                    Rfc3339(NOW + 500),
                    Rfc3339(NOW + 60).to_string().replace('Z', ".5Z")
                )),
                Ok(()),
            ),
            (t(r#"{"sub":"a"}"#.into()), Err(TokenError::MissingExp)),
            (
                t(format!(r#"{{"exp":"{}"}}"#, Rfc3339(NOW + 500))),
                Err(TokenError::MissingSub),
            ),
            (
                t(r#"{"sub":"a","exp":12345}"#.into()),
                Err(TokenError::BadClaims),
            ),
            (t(r#"["not an object"]"#.into()), Err(TokenError::BadClaims)),
            (
                t(r#"{"sub":"a","exp":"tomorrow"}"#.into()),
                Err(TokenError::BadClaims),
            ),
        ];
        let v = verifier(vec![k]);
        for (i, (tok, want)) in tokens.iter().enumerate() {
            assert_eq!(
                v.verify(UntrustedToken(tok), NOW).map(|_| ()),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn audience_shapes() {
        let k = local();
        let same = Key::from_paserk(k.to_paserk().as_str()).unwrap();
        let v = Verifier::new(
            vec![same],
            ClaimRules {
                leeway: 0,
                audience: Some("api".into()),
                issuer: None,
            },
        );
        let exp = Rfc3339(NOW + 9);
        let check = |aud: &str| {
            let t = k
                .issue(&format!(r#"{{"sub":"a","exp":"{exp}","aud":{aud}}}"#))
                .unwrap();
            v.verify(UntrustedToken(&t), NOW).map(|_| ())
        };
        assert_eq!(check(r#""api""#), Ok(()));
        // Escapes make the string owned rather than borrowed: same answer.
        assert_eq!(check(r#""a\u0070i""#), Ok(()));
        assert_eq!(check(r#"["x","a\u0070i"]"#), Ok(()));
        assert_eq!(check(r#"[]"#), Err(TokenError::WrongAudience));
        assert_eq!(check(r#""apix""#), Err(TokenError::WrongAudience));
        // `null` is an absent claim.
        assert_eq!(check("null"), Err(TokenError::WrongAudience));
        for bad in ["1", r#"{"a":"api"}"#, r#"["api",1]"#, r#"[["api"]]"#] {
            assert_eq!(check(bad), Err(TokenError::BadClaims), "aud {bad}");
        }
    }

    #[test]
    fn audience_and_issuer() {
        let k = local();
        let t = k
            .issue(&format!(
                r#"{{"sub":"a","exp":"{}","aud":["x","api"],"iss":"idp"}}"#,
                Rfc3339(NOW + 9)
            ))
            .unwrap();
        let mut v = Verifier::new(
            vec![k],
            ClaimRules {
                leeway: 0,
                audience: Some("api".into()),
                issuer: Some("idp".into()),
            },
        );
        assert!(v.verify(UntrustedToken(&t), NOW).is_ok());
        v.rules.audience = Some("other".into());
        assert_eq!(
            v.verify(UntrustedToken(&t), NOW),
            Err(TokenError::WrongAudience)
        );
        v.rules.audience = None;
        v.rules.issuer = Some("evil".into());
        assert_eq!(
            v.verify(UntrustedToken(&t), NOW),
            Err(TokenError::WrongIssuer)
        );
    }

    #[test]
    fn bounds_before_crypto() {
        let v = verifier(vec![local()]);
        let long = format!("v4.local.{}", "A".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            v.verify(UntrustedToken(&long), NOW),
            Err(TokenError::TooLong)
        );
        assert_eq!(v.verify(UntrustedToken(""), NOW), Err(TokenError::Empty));
        assert_eq!(
            v.verify(UntrustedToken("v4.local.ab cd"), NOW),
            Err(TokenError::NotVisibleAscii)
        );
        assert_eq!(
            v.verify(UntrustedToken("v3.local.abcd"), NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            v.verify(UntrustedToken("v4.local.!!!"), NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let k = local();
        let t = k.issue(&claims(NOW + 100)).unwrap();
        let v = verifier(vec![k]);
        let mut bytes = t.into_bytes();
        let i = 20;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(bytes).unwrap();
        assert_eq!(v.verify(UntrustedToken(&t), NOW), Err(TokenError::Forged));
    }

    #[test]
    fn secrets_do_not_print() {
        let k = local();
        let paserk = k.to_paserk();
        let b64 = paserk.trim_start_matches("k4.local.");
        assert!(!format!("{k:?}").contains(b64));
        let t = k.issue(&claims(NOW)).unwrap();
        assert_eq!(format!("{}", UntrustedToken(&t)), "v4.local.…");
        assert_eq!(format!("{:?}", UntrustedToken(&t)), "v4.local.…");
    }

    #[test]
    fn paserk_round_trip_and_errors() {
        let k = Key::generate_secret().unwrap();
        let again = Key::from_paserk(&format!("{}\n", k.to_paserk().as_str())).unwrap();
        assert_eq!(again.id(), k.id());
        assert!(k.id().starts_with("k4.pid."));
        assert_eq!(
            Key::from_paserk("k3.local.AAAA").unwrap_err(),
            KeyError::UnknownType
        );
        assert_eq!(
            Key::from_paserk("k4.local.AAAA").unwrap_err(),
            KeyError::Malformed("k4.local")
        );
    }
}
