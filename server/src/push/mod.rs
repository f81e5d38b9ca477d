//! Push notifications (protocol §11): who is pushed, the worker that drains the durable queue,
//! and the gateways.
//!
//! Every node runs one [`Pusher`]. It wakes when a commit on its node queued something
//! ([`crate::service::Service::push_wake`]) and otherwise every `--push-poll-ms`, then:
//!
//! 1. takes a *job* (a new message) under a lease and turns it into per-user entries in batches
//!    of `--push-batch` users: active members with a device, not the sender, whose mode lets the
//!    message through, and who are not *active* (connected on some node and not away) — so a
//!    room of 10,000 members never holds more than one batch in memory;
//! 2. takes due *entries* under a lease, checks each again (read since, message deleted, mode
//!    changed, left the room, became active: dropped and counted by reason), and sends the rest
//!    to each of the user's devices, at most `--push-concurrency` requests at once.
//!
//! A retryable gateway answer (429, 5xx, no answer) puts the entry off (after `Retry-After`
//! when given, else with doubling backoff) up to `--push-max-attempts` attempts; the user's
//! other devices may then get the push again, which their notification collapses into the
//! same one (collapse id per room). A token the gateway says is gone is unregistered.

mod gateway;
mod payload;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use roam_proto::{
    Message, PresenceStatus, PushKind, PushMode, PushPayload, PushPlatform, PushPreview, RoomKind,
    PUSH_PAYLOAD_VERSION,
};
use tokio_util::sync::CancellationToken;

pub use self::gateway::{signature, Apns, Fcm, Gateway, Outcome, ServiceAccount, Webhook};
pub use self::payload::{APNS_MAX_BYTES, FCM_MAX_DATA_BYTES};
use crate::config::PushConfig;
use crate::service::{now_ms, Service};
use crate::store::push::{NewPush, PushEntry, PushTarget, Settle};
use crate::store::StoreError;

/// Push set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A gateway's key or settings cannot be used.
    #[error("push: {0}")]
    Setup(String),
}

/// The gateways a deployment configured, by platform.
#[derive(Debug, Default, Clone)]
pub struct Gateways {
    pub apns: Option<Arc<dyn Gateway>>,
    pub fcm: Option<Arc<dyn Gateway>>,
    pub webhook: Option<Arc<dyn Gateway>>,
}

impl Gateways {
    /// The gateways the settings name.
    pub fn from_config(c: &PushConfig) -> Result<Gateways, PushError> {
        let mut g = Gateways::default();
        if let (Some(key), Some(kid), Some(team)) =
            (&c.push_apns_key, &c.push_apns_key_id, &c.push_apns_team_id)
        {
            g.apns = Some(Arc::new(Apns::new(
                key,
                kid,
                team,
                &c.push_apns_url,
                &c.push_apns_sandbox_url,
            )?));
        }
        if let Some(creds) = &c.push_fcm_credentials {
            g.fcm = Some(Arc::new(Fcm::new(creds, &c.push_fcm_url)?));
        }
        if let (Some(url), Some(secret)) = (&c.push_webhook_url, &c.push_webhook_secret) {
            g.webhook = Some(Arc::new(Webhook::new(url, secret)?));
        }
        Ok(g)
    }

    /// Whether any gateway is configured: without one no push can be sent, and the store
    /// records no push job for a new message (see `PushStore::set_push_jobs`).
    pub fn any(&self) -> bool {
        self.apns.is_some() || self.fcm.is_some() || self.webhook.is_some()
    }

    fn of(&self, p: PushPlatform) -> Option<&Arc<dyn Gateway>> {
        match p {
            PushPlatform::Apns => self.apns.as_ref(),
            PushPlatform::Fcm => self.fcm.as_ref(),
            PushPlatform::Webhook => self.webhook.as_ref(),
        }
    }
}

/// How the worker runs (from [`PushConfig`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub previews: bool,
    pub device_per_min: u32,
    pub max_attempts: u32,
    pub poll: Duration,
    pub lease: Duration,
    pub batch: u32,
    pub concurrency: usize,
}

impl Settings {
    pub fn from_config(c: &PushConfig) -> Settings {
        Settings {
            previews: c.push_previews,
            device_per_min: c.push_device_per_min,
            max_attempts: c.push_max_attempts,
            poll: Duration::from_millis(c.push_poll_ms),
            lease: Duration::from_secs(c.push_lease_secs),
            batch: c.push_batch,
            concurrency: c.push_concurrency,
        }
    }
}

/// At most `per_min` pushes per device in any minute.
#[derive(Debug)]
struct DeviceRate {
    per_min: usize,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl DeviceRate {
    fn new(per_min: u32) -> Self {
        DeviceRate {
            per_min: per_min.max(1) as usize,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// How long until the device may get another push (`None`: now), recording one if now.
    fn take(&self, device: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut sent = self.sent.lock();
        if sent.len() > 100_000 {
            sent.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < MINUTE));
        }
        let q = sent.entry(device.to_owned()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= MINUTE) {
            q.pop_front();
        }
        if q.len() >= self.per_min {
            let oldest = q.front().copied().unwrap_or(now);
            return Some((oldest + MINUTE).saturating_duration_since(now));
        }
        q.push_back(now);
        None
    }
}

/// Doubling backoff from 1 s, at most 5 minutes.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(8)).min(Duration::from_secs(300))
}

/// The push worker of one node.
#[derive(Debug)]
pub struct Pusher {
    service: Arc<Service>,
    gateways: Gateways,
    settings: Settings,
    /// This worker's lease name.
    owner: String,
    rate: DeviceRate,
}

/// The messages one batch of entries read, by room and id.
type MessageCache = Mutex<HashMap<(String, String), Option<Message>>>;

/// What sending one entry came to.
enum Sent {
    Done,
    Retry(Duration),
}

impl Pusher {
    pub fn new(service: Arc<Service>, gateways: Gateways, settings: Settings) -> Arc<Pusher> {
        Arc::new(Pusher {
            rate: DeviceRate::new(settings.device_per_min),
            owner: uuid::Uuid::new_v4().simple().to_string(),
            service,
            gateways,
            settings,
        })
    }

    /// Runs until `stop`: drains the queue whenever woken or every poll interval.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let wake = Arc::clone(&self.service.push_wake);
        loop {
            let mut idle = true;
            match self.step().await {
                Ok(worked) => idle = !worked,
                Err(e) => tracing::warn!(error = %e, "push: queue step failed; retrying"),
            }
            self.report_queue().await;
            if !idle {
                if stop.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// One round: a job's next batch, then one batch of due entries. True if it found work.
    pub async fn step(&self) -> Result<bool, StoreError> {
        let jobs = self.fan_out_one().await?;
        let entries = self.send_due().await?;
        Ok(jobs || entries)
    }

    fn lease_until(&self, now: i64) -> i64 {
        now + self.settings.lease.as_millis() as i64
    }

    async fn report_queue(&self) {
        let m = &self.service.metrics.push;
        match self.service.store.push_queue_stats().await {
            Ok(s) => {
                m.queue_depth.set(s.entries as i64);
                m.queue_jobs.set(s.jobs as i64);
                let age = s
                    .oldest_at
                    .map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
                m.queue_oldest_seconds.set(age);
            }
            Err(e) => tracing::debug!(error = %e, "push: queue stats unreadable"),
        }
    }

    /// Takes a job and turns all of it into entries, batch by batch (each batch one
    /// transaction that also moves the job's cursor, so a crash resumes where it stopped).
    async fn fan_out_one(&self) -> Result<bool, StoreError> {
        let store = &self.service.store;
        let now = now_ms();
        let Some(job) = store
            .claim_push_job(&self.owner, now, self.lease_until(now))
            .await?
        else {
            return Ok(false);
        };
        let m = &self.service.metrics.push;
        let msg = store
            .message(&job.room, &job.message)
            .await?
            .filter(|msg| !msg.deleted);
        let Some(msg) = msg else {
            m.skipped("deleted");
            store
                .push_fanout(job.id, &self.owner, &[], None, now_ms())
                .await?;
            return Ok(true);
        };
        let mut direct: Option<bool> = None;
        let mut after = job.after_user.clone();
        loop {
            let batch = store
                .push_candidates(&job.room, &job.sender, &after, self.settings.batch)
                .await?;
            let last = batch.last().map(|c| c.user.clone());
            let full = batch.len() >= self.settings.batch as usize;
            let mut wanted = Vec::with_capacity(batch.len());
            for c in batch {
                if mode_lets(store, &job.room, &msg, &c.user, c.mode, &mut direct).await? {
                    wanted.push(c.user);
                } else {
                    m.skipped("mode");
                }
            }
            let active = self.active(&wanted).await;
            let entries: Vec<NewPush> = wanted
                .into_iter()
                .filter(|u| {
                    let a = active.contains(u);
                    if a {
                        m.skipped("active");
                    }
                    !a
                })
                .map(|user| NewPush {
                    user,
                    room: job.room.clone(),
                    seq: job.seq,
                    message: job.message.clone(),
                })
                .collect();
            let next = if full { last } else { None };
            let held = store
                .push_fanout(job.id, &self.owner, &entries, next.as_deref(), now_ms())
                .await?;
            if !held {
                tracing::warn!(
                    job = job.id,
                    "push: lost a job's lease; another node goes on"
                );
                return Ok(true);
            }
            match next {
                Some(n) => after = n,
                None => return Ok(true),
            }
        }
    }

    /// Those of `users` with a device that is connected and not away, on any node.
    async fn active(&self, users: &[String]) -> HashSet<String> {
        if users.is_empty() {
            return HashSet::new();
        }
        self.service
            .live_presences(users)
            .await
            .into_iter()
            .filter(|p| p.status == PresenceStatus::Online)
            .map(|p| p.user)
            .collect()
    }

    /// Takes one batch of due entries and settles each.
    async fn send_due(&self) -> Result<bool, StoreError> {
        let store = &self.service.store;
        let now = now_ms();
        let entries = store
            .claim_pushes(&self.owner, now, self.lease_until(now), self.settings.batch)
            .await?;
        if entries.is_empty() {
            return Ok(false);
        }
        let users = distinct_users(&entries, |e| e.key.kind == PushKind::Message);
        let active = Arc::new(self.active(&users).await);
        // The badges of the batch's users in one read (a room they share is read once); a user
        // missing from it (the read failed) has theirs read alone.
        let everyone = distinct_users(&entries, |_| true);
        let badges = match store.push_badges(&everyone).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "push: the batch's badges are unreadable");
                HashMap::new()
            }
        };
        let badges = Arc::new(badges);
        // One read per message of the batch (a room's fan-out shares one).
        let messages: Arc<MessageCache> = Default::default();
        futures_util::stream::iter(entries)
            .for_each_concurrent(self.settings.concurrency, |e| {
                let active = Arc::clone(&active);
                let messages = Arc::clone(&messages);
                let badges = Arc::clone(&badges);
                async move {
                    if let Err(err) = self.settle(e, &active, &messages, &badges).await {
                        tracing::warn!(error = %err, "push: settling an entry failed");
                    }
                }
            })
            .await;
        Ok(true)
    }

    async fn message(
        &self,
        room: &str,
        id: &str,
        cache: &MessageCache,
    ) -> Result<Option<Message>, StoreError> {
        let k = (room.to_owned(), id.to_owned());
        if let Some(m) = cache.lock().get(&k) {
            return Ok(m.clone());
        }
        let m = self.service.store.message(room, id).await?;
        cache.lock().insert(k, m.clone());
        Ok(m)
    }

    /// Checks one entry again, sends it, and settles it.
    async fn settle(
        &self,
        e: PushEntry,
        active: &HashSet<String>,
        messages: &MessageCache,
        badges: &HashMap<String, u64>,
    ) -> Result<(), StoreError> {
        let m = &self.service.metrics.push;
        let store = &self.service.store;
        let sent = match self.check_and_send(&e, active, messages, badges).await {
            Ok(s) => s,
            Err(why) => {
                m.skipped(why);
                Sent::Done
            }
        };
        match sent {
            Sent::Done => {
                m.coalesced.inc_by(e.coalesced);
                store.settle_push(&e.key, e.version, Settle::Done).await
            }
            Sent::Retry(after) if e.attempts + 1 < self.settings.max_attempts => {
                // Without a `Retry-After`, the queue's own doubling backoff.
                let after = if after.is_zero() {
                    backoff(e.attempts)
                } else {
                    after
                };
                let due_at = now_ms() + after.as_millis() as i64;
                store
                    .settle_push(&e.key, e.version, Settle::Retry { due_at })
                    .await
            }
            Sent::Retry(_) => {
                m.failed("gave_up");
                m.coalesced.inc_by(e.coalesced);
                store.settle_push(&e.key, e.version, Settle::Done).await
            }
        }
    }

    /// The checks before sending (an `Err` names why nothing is sent), then the sends.
    async fn check_and_send(
        &self,
        e: &PushEntry,
        active: &HashSet<String>,
        messages: &MessageCache,
        badges: &HashMap<String, u64>,
    ) -> Result<Sent, &'static str> {
        let store = &self.service.store;
        let fail = |err: StoreError| {
            tracing::warn!(error = %err, "push: store read failed");
            "store"
        };
        if !e.member {
            return Err("not_member");
        }
        let mut preview = None;
        let mut committed_at = e.created_at;
        if e.key.kind == PushKind::Message {
            if e.marker >= e.seq {
                return Err("read");
            }
            let id = e.message.as_deref().unwrap_or_default();
            let msg = self
                .message(&e.key.room, id, messages)
                .await
                .map_err(fail)?
                .filter(|m| !m.deleted)
                .ok_or("deleted")?;
            committed_at = msg.created_at;
            let mut direct = None;
            if !mode_lets(store, &e.key.room, &msg, &e.key.user, e.mode, &mut direct)
                .await
                .map_err(fail)?
            {
                return Err("mode");
            }
            if active.contains(&e.key.user) {
                return Err("active");
            }
            if self.settings.previews {
                let title = store
                    .room(&e.key.room)
                    .await
                    .map_err(fail)?
                    .map(|r| r.title)
                    .unwrap_or_default();
                preview = Some(PushPreview {
                    sender: msg.sender.clone(),
                    room_title: title,
                    body: msg.body.clone(),
                });
            }
        }
        let targets = store.push_targets(&e.key.user).await.map_err(fail)?;
        if targets.is_empty() {
            return Err("no_device");
        }
        let unread = match badges.get(&e.key.user) {
            Some(n) => *n,
            None => store.push_badge(&e.key.user).await.map_err(fail)?,
        };
        let p = PushPayload {
            v: PUSH_PAYLOAD_VERSION,
            kind: e.key.kind,
            room: e.key.room.clone(),
            seq: e.seq,
            message: e.message.clone(),
            unread,
            preview,
        };
        Ok(self.send_all(&targets, &p, committed_at).await)
    }

    /// Sends to every device of the user; the longest wait any of them asks for, if any.
    async fn send_all(&self, targets: &[PushTarget], p: &PushPayload, committed_at: i64) -> Sent {
        let m = &self.service.metrics.push;
        let mut retry: Option<Duration> = None;
        let kind = match p.kind {
            PushKind::Message => "message",
            PushKind::Read => "read",
        };
        for t in targets {
            let Some(gw) = self.gateways.of(t.platform) else {
                m.skipped("no_gateway");
                continue;
            };
            // A read push is never held back: it takes away what the user already saw.
            if p.kind == PushKind::Message {
                if let Some(wait) = self.rate.take(&t.token) {
                    m.retried("device_rate");
                    retry = retry.max(Some(wait));
                    continue;
                }
            }
            match gw.send(t, p).await {
                Outcome::Sent => {
                    m.sent(&format!("{}_{kind}", t.platform.as_str()));
                    let took = (now_ms() - committed_at).max(0) as f64 / 1000.0;
                    m.latency_seconds.observe(took);
                }
                Outcome::Unregistered(why) => {
                    m.failed(why);
                    match self
                        .service
                        .store
                        .drop_push_token(t.platform, &t.token)
                        .await
                    {
                        Ok(true) => {
                            m.tokens_removed.inc();
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "push: cannot drop a dead token"),
                    }
                }
                Outcome::Retry { after, reason } => {
                    m.retried(reason);
                    retry = retry.max(Some(after.unwrap_or(Duration::ZERO)));
                }
                Outcome::Failed(why) => m.failed(why),
            }
        }
        match retry {
            None => Sent::Done,
            Some(after) => Sent::Retry(after),
        }
    }
}

/// Whether `mode` lets the message through to `user` (`direct`: whether the room is a direct
/// The users of the `entries` that `keep` keeps, each once.
fn distinct_users(entries: &[PushEntry], keep: impl Fn(&PushEntry) -> bool) -> Vec<String> {
    entries
        .iter()
        .filter(|e| keep(e))
        .map(|e| e.key.user.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}

/// one, read once when first needed).
async fn mode_lets(
    store: &Arc<dyn crate::store::Store>,
    room: &str,
    msg: &Message,
    user: &str,
    mode: PushMode,
    direct: &mut Option<bool>,
) -> Result<bool, StoreError> {
    Ok(match mode {
        PushMode::Mute => false,
        PushMode::All | PushMode::Default => true,
        PushMode::Mentions => {
            if roam_proto::mentions_user(&msg.body, user) {
                true
            } else {
                if direct.is_none() {
                    *direct = Some(is_direct(store, room).await?);
                }
                direct.unwrap_or(false)
            }
        }
    })
}

/// A private room of exactly two active members.
async fn is_direct(store: &Arc<dyn crate::store::Store>, room: &str) -> Result<bool, StoreError> {
    let private = store
        .room(room)
        .await?
        .is_some_and(|r| r.kind == RoomKind::Private);
    Ok(private && store.active_members(room).await? == 2)
}

/// How long before the last frame heard from a device that lost contact a message may have been
/// sent without reaching it (a frame heard at T left the device about half a round trip
/// before; what the server wrote from about a round trip before T on may have been lost).
const LOST_CONTACT_MARGIN_MS: i64 = 2_000;
/// Messages looked at per room for one that the room's mode lets through.
const LOST_CONTACT_PER_ROOM: u32 = 20;

/// The server lost contact with an active device of `user` (it fell silent until the idle
/// timeout, or stopped reading), last heard from at `last_heard` (ms). While it counted as
/// active the push worker skipped the user; unless another device of the user is active (on
/// any node), this queues a push per room for the newest message from others since then that
/// the user has not read and the room's mode lets through, and wakes the worker. The worker
/// checks each again before it sends, as every push.
pub async fn lost_contact(service: &Service, user: &str, last_heard: i64) {
    match queue_missed(service, user, last_heard - LOST_CONTACT_MARGIN_MS).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::debug!(user, pushes = n, "push: queued what a silent device missed");
            service.metrics.push.lost_contact.inc_by(n as u64);
            service.push_wake.notify_one();
        }
        Err(e) => {
            tracing::warn!(error = %e, user, "push: cannot queue what a silent device missed")
        }
    }
}

async fn queue_missed(service: &Service, user: &str, since: i64) -> Result<usize, StoreError> {
    let users = [user.to_owned()];
    let active = service
        .live_presences(&users)
        .await
        .iter()
        .any(|p| p.status == PresenceStatus::Online);
    let store = &service.store;
    if active || store.push_targets(user).await?.is_empty() {
        return Ok(0);
    }
    let missed = store
        .push_missed(user, since, LOST_CONTACT_PER_ROOM)
        .await?;
    if missed.is_empty() {
        return Ok(0);
    }
    let settings = store.push_settings(user).await?;
    let mut entries: Vec<NewPush> = Vec::new();
    // `missed` comes room by room, newest first: the first message of a room that its mode
    // lets through is the room's push (the entry coalesces the rest).
    let mut decided: Option<&str> = None;
    let mut direct: (Option<&str>, Option<bool>) = (None, None);
    for m in &missed {
        if decided == Some(m.room.as_str()) {
            continue;
        }
        if direct.0 != Some(m.room.as_str()) {
            direct = (Some(m.room.as_str()), None);
        }
        let mode = settings
            .rooms
            .get(&m.room)
            .copied()
            .unwrap_or(settings.default);
        let lets = match mode {
            PushMode::Mute => {
                decided = Some(m.room.as_str());
                false
            }
            PushMode::All | PushMode::Default => true,
            PushMode::Mentions => match store.message(&m.room, &m.message).await? {
                Some(msg) if !msg.deleted => {
                    mode_lets(store, &m.room, &msg, user, mode, &mut direct.1).await?
                }
                _ => false,
            },
        };
        if lets {
            decided = Some(m.room.as_str());
            entries.push(NewPush {
                user: user.to_owned(),
                room: m.room.clone(),
                seq: m.seq,
                message: m.message.clone(),
            });
        }
    }
    if !entries.is_empty() {
        store.push_enqueue(&entries, now_ms()).await?;
    }
    Ok(entries.len())
}

/// Starts the node's push worker with the gateways it configured ([`Gateways::from_config`]).
pub fn start(
    service: Arc<Service>,
    gateways: Gateways,
    config: &PushConfig,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let pusher = Pusher::new(service, gateways, Settings::from_config(config));
    tokio::spawn(pusher.run(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gets_at_most_its_rate() {
        let r = DeviceRate::new(3);
        for _ in 0..3 {
            assert_eq!(r.take("a"), None);
        }
        let wait = r.take("a").expect("the fourth waits");
        assert!(wait > Duration::from_secs(59) && wait <= MINUTE);
        assert_eq!(r.take("b"), None, "another device is not held up");
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(256));
        assert!(backoff(8) <= Duration::from_secs(300));
    }
}
