//! A TCP proxy in front of the API server that can hold back the server's answers: the
//! "slow API server" a controller must survive without writing after it lost its lease.
//! Requests pass at once (they reach the real server while the client still leads);
//! only the bytes coming back wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct SlowProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    /// Chunks of answers being held back right now, and chunks passed on so far.
    held: Arc<AtomicU64>,
    passed: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl SlowProxy {
    pub async fn start(upstream_port: u16) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (held, passed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (delay, held_now, passed_now) = (delay_ms.clone(), held.clone(), passed.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (delay, held, passed) = (delay.clone(), held_now.clone(), passed_now.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = async {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        let _ = server_write.shutdown().await;
                    };
                    let down = async {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = match server_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let wait = delay.load(Ordering::Relaxed);
                            if wait > 0 {
                                held.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(wait)).await;
                                held.fetch_sub(1, Ordering::SeqCst);
                            }
                            if client_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                        let _ = client_write.shutdown().await;
                    };
                    tokio::join!(up, down);
                });
            }
        });
        SlowProxy {
            port,
            delay_ms,
            held,
            passed,
            task,
        }
    }

    /// Every answer from the server now waits `delay` before it is passed on.
    pub fn delay_answers(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl SlowProxy {
    /// Waits until every answer held back has been passed on, then until `more` further
    /// answers went through (the client kept talking after it had them all). Generous
    /// deadline: answers are held for at most the delay that was set.
    pub async fn wait_until_drained(&self, more: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        while self.held.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy still holds answers after 180 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let target = self.passed.load(Ordering::SeqCst) + more;
        while self.passed.load(Ordering::SeqCst) < target {
            assert!(
                std::time::Instant::now() < deadline,
                "the client behind the proxy went quiet"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
