//! The controller's Service (`modelsplit-controller-metrics`) as the gateway reaches it: one
//! fixed address that forwards each connection to one of the replicas' metrics ports, round
//! robin. There is no kube-proxy or cluster DNS here; the gateway's Envoy reaches this address
//! through the cluster istiod names for fetching remote modules (see [`super::istio`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct ServiceProxy {
    pub port: u16,
    endpoints: Arc<Mutex<Vec<u16>>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl ServiceProxy {
    /// Listens on a free loopback port, with no endpoints yet (connections are closed).
    pub async fn start() -> ServiceProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Service stand-in");
        let port = listener.local_addr().expect("its address").port();
        let endpoints = Arc::new(Mutex::new(Vec::<u16>::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (targets, count) = (endpoints.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let target = {
                    let targets = targets.lock().expect("endpoints");
                    (!targets.is_empty()).then(|| targets[n % targets.len()])
                };
                let Some(target) = target else { continue };
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        ServiceProxy {
            port,
            endpoints,
            connections,
            task,
        }
    }

    /// The replicas' metrics ports, as the Service's Endpoints would list them.
    pub fn set_endpoints(&self, ports: &[u16]) {
        *self.endpoints.lock().expect("endpoints") = ports.to_vec();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
