//! The app's token source, adapted to the core's `TokenProvider`.
//!
//! The provider is asynchronous without being an `async` foreign method (the Swift 6.0 compiler
//! crashes on the code uniffi generates for those): the client asks with a [`TokenReply`], and
//! the app answers through it whenever it has the token, from any thread. The Swift and Kotlin
//! layers wrap this in an `async` closure (`AsyncTokenProvider`) and a `suspend` function
//! (`SuspendTokenProvider`).

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

/// Longest the client waits for an answer before it treats the token service as unreachable
/// (and retries like after any network failure).
const ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Gives the client a token (a JWT) whenever it connects or calls the REST API. Swift: a
/// protocol; Kotlin: an interface. Most apps use `AsyncTokenProvider` (Swift) or
/// `SuspendTokenProvider` (Kotlin), or `StaticTokenProvider` for a fixed token.
#[uniffi::export(with_foreign)]
pub trait TokenProvider: Send + Sync {
    /// A token is wanted; `refresh` is true when the last one was refused or has expired.
    /// Return at once and answer through `reply`, now or later, from any thread: `token` with
    /// the token; `unreachable` when the token service cannot be reached (the client retries
    /// like after any network failure); `signed_out` when there is no sign-in (the client stops
    /// connecting and reports `NeedsSignIn` until `network_available()` is called). Only the
    /// first answer counts; a reply dropped unanswered counts as `unreachable`.
    fn token(&self, refresh: bool, reply: Arc<TokenReply>);
}

/// What a [`TokenProvider`] answered.
#[derive(Debug)]
enum Answer {
    Token(String),
    Unreachable(String),
    SignedOut(String),
}

/// The answer to one [`TokenProvider::token`] request.
#[derive(Debug, uniffi::Object)]
pub struct TokenReply {
    tx: Mutex<Option<oneshot::Sender<Answer>>>,
}

impl TokenReply {
    fn answer(&self, answer: Answer) {
        let tx = self.tx.lock().take();
        match tx {
            // The client may have stopped waiting (shut down, or the wait ran out): nothing to do.
            Some(tx) => {
                let _ = tx.send(answer);
            }
            None => tracing::debug!("a token request was answered more than once"),
        }
    }
}

#[uniffi::export]
impl TokenReply {
    /// Answers with the token to use.
    pub fn token(&self, token: String) {
        self.answer(Answer::Token(token));
    }

    /// The token service cannot be reached now: the client retries later.
    pub fn unreachable(&self, reason: String) {
        self.answer(Answer::Unreachable(reason));
    }

    /// There is no sign-in: the client stops connecting and reports `NeedsSignIn`.
    pub fn signed_out(&self, reason: String) {
        self.answer(Answer::SignedOut(reason));
    }
}

/// The app's provider as the core's.
pub(crate) struct Tokens(pub(crate) Arc<dyn TokenProvider>);

impl Tokens {
    async fn ask(&self, refresh: bool, wait: Duration) -> roam_core::Result<String> {
        let (tx, rx) = oneshot::channel();
        let reply = Arc::new(TokenReply {
            tx: Mutex::new(Some(tx)),
        });
        let provider = Arc::clone(&self.0);
        // Off the client's async workers: a provider may still do its work before returning.
        let asked = tokio::task::spawn_blocking(move || provider.token(refresh, reply)).await;
        if let Err(err) = asked {
            return Err(roam_core::Error::Unauthorized(format!(
                "the token provider failed: {err}"
            )));
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Answer::Token(token))) => Ok(token),
            Ok(Ok(Answer::Unreachable(reason))) => Err(roam_core::Error::Network(reason)),
            Ok(Ok(Answer::SignedOut(reason))) => Err(roam_core::Error::Unauthorized(reason)),
            Ok(Err(_)) => Err(roam_core::Error::Network(
                "the token provider dropped its reply without answering".into(),
            )),
            Err(_) => Err(roam_core::Error::Network(format!(
                "the token provider did not answer within {} s",
                wait.as_secs()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl roam_core::TokenProvider for Tokens {
    async fn token(&self, refresh: bool) -> roam_core::Result<String> {
        self.ask(refresh, ANSWER_WAIT).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers from another thread after a while, or as told.
    struct Later(fn(&TokenReply));

    impl TokenProvider for Later {
        fn token(&self, _refresh: bool, reply: Arc<TokenReply>) {
            let f = self.0;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                f(&reply);
            });
        }
    }

    async fn ask(f: fn(&TokenReply)) -> roam_core::Result<String> {
        Tokens(Arc::new(Later(f)))
            .ask(false, Duration::from_secs(5))
            .await
    }

    #[tokio::test]
    async fn answers_arrive_from_another_thread_and_only_the_first_counts() {
        let got = ask(|r| {
            r.token("t1".into());
            r.signed_out("too late".into());
        })
        .await;
        assert_eq!(got.ok().as_deref(), Some("t1"));
    }

    #[tokio::test]
    async fn unreachable_is_a_network_error_and_signed_out_is_unauthorized() {
        let unreachable = ask(|r| r.unreachable("offline".into())).await;
        assert!(matches!(unreachable, Err(roam_core::Error::Network(r)) if r == "offline"));
        let signed_out = ask(|r| r.signed_out("revoked".into())).await;
        assert!(matches!(signed_out, Err(roam_core::Error::Unauthorized(r)) if r == "revoked"));
    }

    #[tokio::test]
    async fn a_reply_dropped_or_never_answered_is_a_network_error() {
        let dropped = ask(|_| {}).await;
        assert!(matches!(dropped, Err(roam_core::Error::Network(r)) if r.contains("dropped")));

        struct Keeps(Mutex<Vec<Arc<TokenReply>>>);
        impl TokenProvider for Keeps {
            fn token(&self, _refresh: bool, reply: Arc<TokenReply>) {
                self.0.lock().push(reply);
            }
        }
        let silent = Tokens(Arc::new(Keeps(Mutex::new(Vec::new()))))
            .ask(false, Duration::from_millis(50))
            .await;
        assert!(
            matches!(silent, Err(roam_core::Error::Network(r)) if r.contains("did not answer"))
        );
    }
}
