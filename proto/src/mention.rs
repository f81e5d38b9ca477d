//! Mentions: which users a message body names with `@user`.
//!
//! One rule for both sides: the server notifies the members a message mentions (`mentioned`
//! notifications), and the client counts the messages that mention its user (the room list's
//! mention count) with this same function, so the two never disagree about what a mention is.

/// Most distinct users one body can mention; the rest are ignored.
pub const MAX_MENTIONS: usize = 20;

/// The distinct user ids a body mentions, in order of first appearance: every
/// whitespace-separated word that starts with `@` and, once trailing `, . : ; ! ?` are cut, is a
/// valid user id. At most [`MAX_MENTIONS`].
pub fn mentions(body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in body.split(char::is_whitespace) {
        if let Some(rest) = word.strip_prefix('@') {
            let name = rest.trim_end_matches([',', '.', ':', ';', '!', '?']);
            if crate::validate::user_id(name).is_ok() && !out.iter().any(|n| n == name) {
                out.push(name.to_owned());
            }
        }
        if out.len() >= MAX_MENTIONS {
            break;
        }
    }
    out
}

/// True when `body` mentions `user` (by the rule of [`mentions`]).
pub fn mentions_user(body: &str, user: &str) -> bool {
    mentions(body).iter().any(|u| u == user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_parsed_once_in_order() {
        assert_eq!(mentions("hi @bob and @carol, @bob!"), vec!["bob", "carol"]);
        assert!(mentions("email a@b.c").is_empty());
        assert!(mentions("@ alone").is_empty());
        assert!(mentions_user("ping @dave.", "dave"));
        assert!(!mentions_user("ping @davey", "dave"));
    }

    #[test]
    fn at_most_twenty() {
        let body: String = (0..30).map(|i| format!("@u{i} ")).collect();
        assert_eq!(mentions(&body).len(), MAX_MENTIONS);
    }
}
