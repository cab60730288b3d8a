//! Many requests in flight at once, so that 10,000 requests take seconds.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Runs `request(i)` for every `i` in `0..total` with up to `concurrency` in flight;
/// results are returned in index order.
pub async fn run_many<T, F, Fut>(total: usize, concurrency: usize, request: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    run_while(concurrency, total, request, move |i| i < total).await
}

/// Runs `request(i)` continuously with `concurrency` in flight until `stop` is set
/// (and at least `minimum` have been sent); results are returned in index order.
pub async fn run_until<T, F, Fut>(
    stop: Arc<AtomicBool>,
    minimum: usize,
    concurrency: usize,
    request: F,
) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    run_while(concurrency, 0, request, move |i| {
        i < minimum || !stop.load(Ordering::Relaxed)
    })
    .await
}

/// Workers, `concurrency` of them, take the next index while `more(index)` holds and
/// run `request` on it; results are returned in index order (`expected` sizes them).
async fn run_while<T, F, Fut>(
    concurrency: usize,
    expected: usize,
    request: F,
    more: impl Fn(usize) -> bool + Send + Sync + 'static,
) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (request, more) = (Arc::new(request), Arc::new(more));
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (request, more, next) = (request.clone(), more.clone(), next.clone());
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if !more(i) {
                    return done;
                }
                done.push((i, request(i).await));
            }
        });
    }
    let mut all = Vec::with_capacity(expected);
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(done) => all.extend(done),
            // A request that panicked is a failed test: surface its message.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("request worker cancelled: {error}"),
        }
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_every_index_once_in_order() {
        let results = run_many(1000, 16, |i| async move { i * 2 }).await;
        assert_eq!(results, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn runs_until_stopped_and_at_least_the_minimum() {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let load = tokio::spawn(run_until(stop.clone(), 10, 4, move |i| {
            counter.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                i
            }
        }));
        while sent.load(Ordering::Relaxed) < 50 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let results = load.await.unwrap();
        assert!(results.len() >= 50);
        assert_eq!(results, (0..results.len()).collect::<Vec<_>>());
    }
}
