//! Keeps the snapshot following the store: every second, and at once
//! whenever the store says another writer committed (PostgreSQL
//! `NOTIFY`), the writer reads what changed after the position it applied
//! and publishes it. A notification that carries the change and follows the
//! applied position exactly is applied without reading the log (one
//! database round trip less on the way from a suspension to its
//! enforcement). A notification is never the only copy of a change: a
//! missed or dropped one costs at most the one-second round. A store that
//! cannot be read leaves the snapshot unconfirmed, and the request path
//! fails closed once it is older than `state_max_age_secs`. It must never
//! be called from the request path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::control::backend::Wake;

use crate::control::writer::Writer;

/// How often the state is confirmed without a wake-up.
const ROUND: Duration = Duration::from_secs(1);

/// Runs until `shutdown` turns true.
pub async fn follow(writer: Arc<Writer>, mut shutdown: watch::Receiver<bool>) {
    let wake = Arc::new(Wake::default());
    let store = writer.store.clone();
    let listening = tokio::spawn({
        let (wake, shutdown) = (wake.clone(), shutdown.clone());
        async move { store.listen(wake, shutdown).await }
    });
    let mut failing = false;
    // Ticks whatever the notifications do: freshness is proven by reading
    // the store, at least once a round.
    let mut round = tokio::time::interval(ROUND);
    loop {
        let rung = tokio::select! {
            _ = shutdown.changed() => break,
            () = wake.rung() => true,
            _ = round.tick() => false,
        };
        if rung {
            let carried = wake.take();
            if !carried.is_empty() && writer.apply_carried(carried).await {
                continue;
            }
        }
        match writer.confirm().await {
            Ok(()) if failing => {
                log::warn!("the state store is readable again; the state caught up");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                log::error!("the state store cannot be read ({e}); requests will be refused (state_unavailable)");
                failing = true;
            }
            Err(_) => {}
        }
    }
    listening.abort();
}
