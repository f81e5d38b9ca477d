//! Routing Roam's `tracing` events to the app's own logger.
//!
//! The library only emits `tracing` events. The first call to [`set_log_listener`] installs a
//! process-wide subscriber made of two layers: an [`EnvFilter`] behind a reload handle (so the
//! app can change the filter at any time) and a [`ForwardLayer`] that formats each event that
//! passes and hands it to the app's [`LogListener`]. Later calls swap the listener and reload
//! the filter; passing no listener turns the filter off, so disabled logging costs one atomic
//! load per call site.
//!
//! Listeners are called synchronously on whatever thread logged (a tokio worker, or the app's
//! own thread for synchronous calls), so they must be quick and thread-safe. Events logged
//! while a listener runs on the same thread are dropped, so a listener that calls back into
//! Roam cannot recurse forever. A listener that throws or panics loses that one line; logging
//! goes on.
//!
//! If the host process already installed a global `tracing` subscriber (a Rust app embedding
//! the core directly), it is left alone and [`set_log_listener`] reports
//! [`RoamError::Internal`].

use std::cell::Cell;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::RoamError;

/// Severity of a log line, from most to least severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<&Level> for LogLevel {
    fn from(level: &Level) -> Self {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }
}

/// Receives Roam's log lines; implement it to route them to the app's logger (`os.Logger`,
/// `android.util.Log`, Timber…).
#[uniffi::export(with_foreign)]
pub trait LogListener: Send + Sync {
    /// One log line. `target` is the Rust module that logged (e.g. `roam_core::outbox`);
    /// `message` is the text followed by the event's fields as `key=value`.
    fn on_log(&self, level: LogLevel, target: String, message: String);
}

/// Routes Roam's logs to `listener`, keeping the lines that `filter` lets through, or stops
/// routing them when `listener` is absent.
///
/// `filter` uses `tracing`'s env-filter syntax: a level (`"info"`), or per-target levels
/// (`"warn,roam_core=debug"`). Can be called again at any time to change either.
#[uniffi::export]
pub fn set_log_listener(
    listener: Option<Arc<dyn LogListener>>,
    filter: String,
) -> Result<(), RoamError> {
    let directives = if listener.is_some() {
        filter.as_str()
    } else {
        "off"
    };
    let new_filter = EnvFilter::try_new(directives).map_err(|err| RoamError::InvalidInput {
        reason: format!("invalid log filter {filter:?}: {err}"),
    })?;
    let router = router()?;
    *router.listener.write().unwrap_or_else(|e| e.into_inner()) = listener;
    router
        .filter
        .reload(new_filter)
        .map_err(|err| RoamError::Internal {
            reason: format!("cannot change the log filter: {err}"),
        })
}

/// The installed subscriber's shared state.
struct Router {
    listener: Arc<RwLock<Option<Arc<dyn LogListener>>>>,
    filter: reload::Handle<EnvFilter, Registry>,
}

static ROUTER: OnceLock<Result<Router, String>> = OnceLock::new();

fn router() -> Result<&'static Router, RoamError> {
    ROUTER
        .get_or_init(|| {
            let listener = Arc::new(RwLock::new(None));
            let (filter, handle) = reload::Layer::new(EnvFilter::new("off"));
            let subscriber = Registry::default().with(filter).with(ForwardLayer {
                listener: Arc::clone(&listener),
            });
            tracing::subscriber::set_global_default(subscriber)
                .map(|()| Router {
                    listener,
                    filter: handle,
                })
                .map_err(|err| format!("another tracing subscriber is installed: {err}"))
        })
        .as_ref()
        .map_err(|reason| RoamError::Internal {
            reason: reason.clone(),
        })
}

thread_local! {
    /// Set while this thread runs a listener, so that its own logging is dropped.
    static IN_LISTENER: Cell<bool> = const { Cell::new(false) };
}

/// Formats events and hands them to the current listener.
struct ForwardLayer {
    listener: Arc<RwLock<Option<Arc<dyn LogListener>>>>,
}

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if IN_LISTENER.with(Cell::get) {
            return;
        }
        let Some(listener) = self
            .listener
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let meta = event.metadata();
        let mut text = MessageText::default();
        event.record(&mut text);
        let level = LogLevel::from(meta.level());
        let target = meta.target().to_owned();
        IN_LISTENER.with(|flag| flag.set(true));
        // A listener that throws (or panics) loses this line, never the calling thread.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            listener.on_log(level, target, text.finish());
        }));
        IN_LISTENER.with(|flag| flag.set(false));
    }
}

/// `message` first, then the other fields as ` key=value`.
#[derive(Default)]
struct MessageText {
    message: String,
    fields: String,
}

impl MessageText {
    fn finish(mut self) -> String {
        if self.message.is_empty() {
            self.fields.trim_start().to_owned()
        } else {
            self.message.push_str(&self.fields);
            self.message
        }
    }
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(LogLevel, String, String)>>);

    impl LogListener for Collect {
        fn on_log(&self, level: LogLevel, target: String, message: String) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((level, target, message));
        }
    }

    #[test]
    fn forwards_filtered_events_then_stops() {
        // A target of its own: other tests of this crate log under `roam_ffi` meanwhile.
        let collect = Arc::new(Collect::default());
        set_log_listener(Some(collect.clone()), "roam_ffi_log_test=debug".into()).expect("set");
        tracing::debug!(target: "roam_ffi_log_test", answer = 42, "hello");
        tracing::trace!(target: "roam_ffi_log_test", "filtered out");
        tracing::info!(target: "other", "filtered out");
        set_log_listener(None, String::new()).expect("unset");
        tracing::error!(target: "roam_ffi_log_test", "after removal");
        let lines = collect.0.lock().expect("lock").clone();
        assert_eq!(
            lines,
            vec![(
                LogLevel::Debug,
                "roam_ffi_log_test".to_owned(),
                "hello answer=42".to_owned()
            )]
        );
        assert!(matches!(
            set_log_listener(Some(collect), "=[".into()),
            Err(RoamError::InvalidInput { .. })
        ));
    }
}
