//! The peer transport over TCP.
//!
//! Outbound: per peer, two lanes (Raft traffic, and snapshot chunks so a bulk
//! transfer never delays heartbeats), each a task with a bounded queue that keeps
//! one connection open, reconnecting with capped exponential backoff. A full queue
//! drops the message: Raft retransmits what matters.
//!
//! Inbound: each connection must open with a handshake naming our cluster and
//! node; every later frame must come from the same sender and incarnation. A bad
//! frame closes the connection and changes nothing.
//!
//! Dead peers: a lane reconnects as soon as its peer closes the connection
//! (the receiver never writes on a lane), and stops backing off when that peer
//! connects to us. When an inbound connection from our leader ends and its peer
//! port then refuses (or resets) a probe connection, the leader's process is
//! gone: the driver is told (`Input::LeaderUnreachable`) and the core
//! campaigns early instead of waiting out an election timeout.
//!
//! Forwarding: a follower sends a forward request to the leader and waits for
//! its answer on the same connection; connections are pooled between requests
//! ([`ForwardPool`]).

use crate::driver::Input;
use crate::service::NodeService;
use crate::shared::Shared;
use crate::state::check_address;
use crate::wire::{
    read_frame, write_frame, Envelope, ForwardRequest, ForwardResponse, FrameError, Handshake,
    Payload,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch, Notify};
use understudy_raft::{Message, MessageBody};
use understudy_types::limits::PEER_SEND_QUEUE_MESSAGES_MAX;

/// First reconnect delay after a failed connection.
const RECONNECT_BACKOFF_INITIAL: Duration = Duration::from_millis(20);
/// Longest reconnect delay.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the check that a leader's process is gone may wait to connect, and
/// then for the connection to be reset.
const LIVENESS_PROBE_TIMEOUT: Duration = Duration::from_millis(200);

fn envelope(shared: &Shared, payload: Payload) -> Envelope {
    Envelope {
        cluster_id: shared.identity.cluster_id.load(Ordering::SeqCst),
        from: shared.id,
        incarnation: shared.identity.incarnation,
        payload,
    }
}

/// Sends Raft messages to peers (used from the driver thread).
pub struct Outbound {
    shared: Arc<Shared>,
    runtime: Handle,
    shutdown: watch::Receiver<bool>,
    lanes: HashMap<(u64, bool), Lane>,
}

/// One outbound lane: its queue, and a wake-up for its reconnect backoff.
struct Lane {
    sender: mpsc::Sender<Message>,
    wake: Arc<Notify>,
}

impl Outbound {
    /// Lanes are spawned on `runtime` on first use and stop at `shutdown`.
    pub fn new(shared: Arc<Shared>, runtime: Handle, shutdown: watch::Receiver<bool>) -> Outbound {
        Outbound {
            shared,
            runtime,
            shutdown,
            lanes: HashMap::new(),
        }
    }

    /// Queues `message` for its receiver, dropping it if the queue is full.
    pub fn send(&mut self, message: Message) {
        let to = message.to.get();
        let bulk = matches!(message.body, MessageBody::SnapshotChunk { .. });
        let lane = self.lanes.entry((to, bulk)).or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(PEER_SEND_QUEUE_MESSAGES_MAX);
            let wake = Arc::new(Notify::new());
            let task = lane_task(
                self.shared.clone(),
                to,
                receiver,
                wake.clone(),
                self.shutdown.clone(),
            );
            self.runtime.spawn(task);
            Lane { sender, wake }
        });
        match lane.sender.try_send(message) {
            Ok(()) => {
                self.shared
                    .metrics
                    .peer_send_queue_depth
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.shared
                    .metrics
                    .peer_messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Outbound {
    /// `peer` just connected to us, so it is up: lanes to it waiting out a
    /// reconnect backoff retry now. Otherwise a peer that was down for a while
    /// stays unreachable from here for up to the longest backoff after it
    /// restarted, and its answers to an election's (pre-)votes arrive late,
    /// together with our own requests, which invites a split vote.
    pub fn wake(&mut self, peer: u64) {
        for bulk in [false, true] {
            if let Some(lane) = self.lanes.get(&(peer, bulk)) {
                lane.wake.notify_one();
            }
        }
    }
}

/// Opens a connection to `to` and sends the handshake.
async fn connect(shared: &Shared, to: u64) -> Result<BufWriter<TcpStream>, String> {
    let address = shared
        .peer_address_of(to)
        .ok_or_else(|| format!("no address known for node {to}"))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|error| format!("connecting to {address}: {error}"))?;
    // Raft messages are small and latency-bound.
    let _ = stream.set_nodelay(true);
    let mut writer = BufWriter::new(stream);
    let hello = envelope(
        shared,
        Payload::Handshake(Handshake {
            to,
            peer_address: shared.peer_address.clone(),
        }),
    );
    write_frame(&mut writer, &hello)
        .await
        .map_err(|error| error.to_string())?;
    Ok(writer)
}

async fn lane_task(
    shared: Arc<Shared>,
    to: u64,
    mut queue: mpsc::Receiver<Message>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = RECONNECT_BACKOFF_INITIAL;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut writer = match connect(&shared, to).await {
            Ok(writer) => {
                backoff = RECONNECT_BACKOFF_INITIAL;
                writer
            }
            Err(error) => {
                tracing::debug!(node = shared.id, peer = to, %error, "peer connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {
                        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    }
                    () = wake.notified() => backoff = RECONNECT_BACKOFF_INITIAL,
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        };
        if !send_until_error(&shared, &mut writer, &mut queue, &mut shutdown).await {
            return;
        }
    }
}

/// Sends queued messages until the connection fails (true: reconnect) or the
/// node stops or the queue closes (false).
async fn send_until_error(
    shared: &Shared,
    writer: &mut BufWriter<TcpStream>,
    queue: &mut mpsc::Receiver<Message>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        let message = tokio::select! {
            message = queue.recv() => message,
            _ = shutdown.changed() => return false,
            // The receiver never writes on a Raft lane, so a readable socket
            // means it closed (or broke) the connection: its process may have
            // died. Reconnect now rather than at the next write, which the
            // kernel would accept into the dead connection and lose, e.g. the
            // pre-vote that should elect the next leader.
            () = closed_by_peer(writer.get_mut()) => return true,
        };
        let Some(message) = message else {
            return false;
        };
        let mut batch = vec![message];
        // Everything already queued goes out with one flush.
        while batch.len() < 64 {
            match queue.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        shared
            .metrics
            .peer_send_queue_depth
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        for message in batch {
            let frame = envelope(shared, Payload::Raft(message));
            if write_frame(writer, &frame).await.is_err() {
                return true;
            }
        }
        if writer.flush().await.is_err() {
            return true;
        }
    }
}

/// Completes when the peer closes or breaks the connection (or, against the
/// protocol, sends on it).
async fn closed_by_peer(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    // Any outcome ends the connection: EOF, an error, or unexpected bytes.
    let _ = stream.read(&mut byte).await;
}

/// Accepts peer connections until `shutdown`.
pub async fn accept_loop(
    listener: TcpListener,
    service: Arc<NodeService>,
    inputs: SyncSender<Input>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, remote)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let inputs = inputs.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = serve_connection(stream, service, inputs) => {
                    if let Err(error) = result {
                        tracing::debug!(%remote, %error, "peer connection closed");
                    }
                }
                _ = shutdown.changed() => {}
            }
        });
    }
}

/// Serves one inbound connection; any protocol violation ends it.
async fn serve_connection(
    stream: TcpStream,
    service: Arc<NodeService>,
    inputs: SyncSender<Input>,
) -> Result<(), FrameError> {
    let shared = service.shared().clone();
    let (reader, writer) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    let hello = read_frame(&mut reader).await?;
    // A clone: `hello` identifies the sender of every later frame.
    let Payload::Handshake(Handshake { to, peer_address }) = hello.payload.clone() else {
        return Err(FrameError::Bad("first frame is not a handshake".into()));
    };
    if to != shared.id || !shared.identity.accept_cluster(hello.cluster_id) {
        return Err(FrameError::Bad(format!(
            "handshake for node {to} of cluster {:#x} refused",
            hello.cluster_id
        )));
    }
    if !shared.accept_incarnation(hello.from, hello.incarnation) {
        return Err(FrameError::Bad("stale incarnation".into()));
    }
    if check_address(&peer_address).is_err() {
        return Err(FrameError::Bad("handshake peer address is invalid".into()));
    }
    shared.learn_peer_address(hello.from, peer_address);
    let served = serve_frames(&mut reader, &mut writer, &hello, &service, &inputs).await;
    // The connection ended (EOF or error): if its sender is our leader, its
    // process may have died. Checked on a task of its own so nothing waits.
    tokio::spawn(hint_if_leader_gone(shared, hello.from, inputs));
    served
}

/// Serves the frames after the handshake until the connection ends.
async fn serve_frames(
    reader: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    hello: &Envelope,
    service: &NodeService,
    inputs: &SyncSender<Input>,
) -> Result<(), FrameError> {
    let shared = service.shared();
    // Whether the driver heard that the peer is up (see `Outbound::wake`).
    // Told on the first Raft frame: one of the peer's own lanes, not one of
    // the short-lived connections that forward client requests.
    let mut peer_announced = false;
    loop {
        let frame = read_frame(reader).await?;
        if frame.cluster_id != hello.cluster_id
            || frame.from != hello.from
            || frame.incarnation != hello.incarnation
        {
            return Err(FrameError::Bad("sender changed mid-connection".into()));
        }
        match frame.payload {
            Payload::Raft(message) => {
                if message.from.get() != hello.from || message.to.get() != shared.id {
                    return Err(FrameError::Bad("message names another sender".into()));
                }
                if !peer_announced {
                    peer_announced = true;
                    let _ = inputs.try_send(Input::PeerConnected { peer: hello.from });
                }
                match inputs.try_send(Input::Message(message)) {
                    // Dropped when the driver is overloaded: Raft retransmits.
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return Ok(()),
                }
            }
            Payload::ForwardRequest(request) => {
                let response = service.serve_forwarded(request).await;
                let answer = envelope(shared, Payload::ForwardResponse(response));
                write_frame(writer, &answer).await?;
                writer.flush().await?;
            }
            _ => return Err(FrameError::Bad("unexpected frame kind".into())),
        }
    }
}

/// After an inbound connection from `peer` ended: if `peer` is the leader this
/// node follows and its process is gone, tell the driver, which campaigns early
/// instead of waiting out an election timeout.
async fn hint_if_leader_gone(shared: Arc<Shared>, peer: u64, inputs: SyncSender<Input>) {
    let follows_peer = |shared: &Shared| {
        shared
            .status_view()
            .status
            .is_some_and(|status| status.leader.map(|leader| leader.get()) == Some(peer))
    };
    if peer == shared.id || !follows_peer(&shared) {
        return;
    }
    let Some(address) = shared.peer_address_of(peer) else {
        return;
    };
    if !peer_process_gone(&address).await {
        tracing::debug!(
            node = shared.id,
            peer,
            "leader connection closed; leader still listening"
        );
        return;
    }
    tracing::debug!(
        node = shared.id,
        peer,
        "leader connection closed and port refusing"
    );
    // Dropped if the driver is overloaded or gone: the election timeout remains.
    let _ = inputs.try_send(Input::LeaderUnreachable { peer });
}

/// Whether the process listening at `address` is gone: a connection is refused
/// (nothing listens), or is accepted but then reset or closed before we say
/// anything (a dying process's listener can still complete the handshake in the
/// kernel; closing it resets the queued connection). A live node waits for our
/// handshake, so the read times out; so does an unreachable host. A timeout or
/// any other error counts as alive: the hint must only name a dead process.
pub(crate) async fn peer_process_gone(address: &str) -> bool {
    let connected = tokio::time::timeout(LIVENESS_PROBE_TIMEOUT, TcpStream::connect(address)).await;
    let mut stream = match connected {
        Ok(Err(error)) => return error.kind() == std::io::ErrorKind::ConnectionRefused,
        Ok(Ok(stream)) => stream,
        Err(_) => return false,
    };
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(LIVENESS_PROBE_TIMEOUT, stream.read(&mut byte)).await;
    // Close with a reset: no TIME_WAIT for a probe (see `forward`).
    let _ = stream.set_zero_linger();
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

/// Why a forwarded request got no answer.
#[derive(Debug)]
pub struct ForwardFailure {
    /// Whether the request may have reached the leader.
    pub sent: bool,
    /// What went wrong.
    pub detail: String,
}

/// Idle forwarding connections kept per peer, at most.
const FORWARD_IDLE_CONNECTIONS_MAX: usize = 64;

/// Idle connections for forwarding, per peer. A follower forwards every client
/// request it cannot serve to the leader; a new TCP connection per request
/// cost a connect, a handshake and a task on the leader each time, and left
/// ports behind. A connection goes back here only after a complete exchange,
/// so it is always between requests; the leader serves the next request on it
/// like the first.
#[derive(Default)]
pub struct ForwardPool {
    idle: std::sync::Mutex<HashMap<u64, Vec<PooledConnection>>>,
}

struct PooledConnection {
    /// Our cluster id when the handshake was sent (a joining node adopts one
    /// later; the leader refuses frames that change it mid-connection).
    cluster_id: u64,
    stream: BufWriter<TcpStream>,
}

impl std::fmt::Debug for ForwardPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counts: HashMap<u64, usize> = idle
            .iter()
            .map(|(peer, list)| (*peer, list.len()))
            .collect();
        formatter
            .debug_struct("ForwardPool")
            .field("idle", &counts)
            .finish()
    }
}

impl ForwardPool {
    /// An idle connection to `peer` that is still open, if any.
    fn take(&self, peer: u64, cluster_id: u64) -> Option<BufWriter<TcpStream>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let connections = idle.get_mut(&peer)?;
        while let Some(connection) = connections.pop() {
            if connection.cluster_id == cluster_id && still_open(connection.stream.get_ref()) {
                return Some(connection.stream);
            }
            close_with_reset(&connection.stream);
        }
        None
    }

    /// Keeps a connection that just completed an exchange, if there is room.
    fn put(&self, peer: u64, cluster_id: u64, stream: BufWriter<TcpStream>) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let connections = idle.entry(peer).or_default();
        if connections.len() < FORWARD_IDLE_CONNECTIONS_MAX {
            connections.push(PooledConnection { cluster_id, stream });
        } else {
            close_with_reset(&stream);
        }
    }
}

/// Whether an idle connection is still usable: nothing to read (the peer sends
/// only answers, and none is due) and no end of stream.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

/// Closes with a reset rather than a FIN: an active close would leave this
/// side's ephemeral port in TIME_WAIT for a minute, and many closed
/// connections then exhaust the ephemeral range (found by the acceptance tests:
/// tens of thousands of TIME_WAIT sockets towards a leader's peer port).
/// Nothing is lost: only connections between exchanges, or failed ones, are
/// closed.
fn close_with_reset(stream: &BufWriter<TcpStream>) {
    let _ = stream.get_ref().set_zero_linger();
}

/// Sends `request` to `leader` and waits for its answer until `deadline`,
/// over an idle pooled connection when there is one.
pub async fn forward(
    shared: &Shared,
    pool: &ForwardPool,
    leader: u64,
    request: ForwardRequest,
    deadline: tokio::time::Instant,
) -> Result<ForwardResponse, ForwardFailure> {
    let cluster_id = shared.identity.cluster_id.load(Ordering::SeqCst);
    let frame = envelope(shared, Payload::ForwardRequest(request));
    if let Some(mut stream) = pool.take(leader, cluster_id) {
        // A write error means the leader never got the whole frame, so it
        // cannot have acted on it: fall through to a fresh connection (the
        // pooled one may have died since the check above).
        if send_frame(&mut stream, &frame).await.is_ok() {
            return await_answer(pool, leader, cluster_id, stream, deadline).await;
        }
        close_with_reset(&stream);
    }
    let not_sent = |detail: String| ForwardFailure {
        sent: false,
        detail,
    };
    let mut stream = connect(shared, leader).await.map_err(not_sent)?;
    shared
        .metrics
        .forward_connections_opened
        .fetch_add(1, Ordering::Relaxed);
    if let Err(error) = send_frame(&mut stream, &frame).await {
        close_with_reset(&stream);
        // Conservative on a fresh connection: the bytes may have left.
        return Err(ForwardFailure {
            sent: true,
            detail: error.to_string(),
        });
    }
    await_answer(pool, leader, cluster_id, stream, deadline).await
}

async fn send_frame(stream: &mut BufWriter<TcpStream>, frame: &Envelope) -> Result<(), FrameError> {
    write_frame(stream, frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads the answer to a request just sent on `stream`; returns the connection
/// to the pool after a complete exchange.
async fn await_answer(
    pool: &ForwardPool,
    leader: u64,
    cluster_id: u64,
    mut stream: BufWriter<TcpStream>,
    deadline: tokio::time::Instant,
) -> Result<ForwardResponse, ForwardFailure> {
    // The request may have reached the leader: every failure from here on is
    // "sent" (outcome unknown for a write).
    let sent = |detail: String| ForwardFailure { sent: true, detail };
    let answer = tokio::time::timeout_at(deadline, read_frame(&mut stream)).await;
    let answer = match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(error)) => {
            close_with_reset(&stream);
            return Err(sent(error.to_string()));
        }
        Err(_) => {
            close_with_reset(&stream);
            return Err(sent(format!("leader {leader} did not answer in time")));
        }
    };
    match answer.payload {
        Payload::ForwardResponse(response) if answer.from == leader => {
            pool.put(leader, cluster_id, stream);
            Ok(response)
        }
        _ => {
            close_with_reset(&stream);
            Err(sent("leader answered with an unexpected frame".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens at the address (the kernel closed a dead process's
    /// listener): the connection is refused and the process counts as gone.
    #[tokio::test]
    async fn a_refused_connection_means_the_process_is_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        assert!(peer_process_gone(&address).await);
    }

    /// A live node accepts and waits for a handshake: not gone.
    #[tokio::test]
    async fn a_listening_process_is_not_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let holder = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            // Hold the connection open, as a live node's handshake read does.
            let mut stream = stream;
            let mut byte = [0u8; 1];
            let _ = stream.read(&mut byte).await;
        });
        assert!(!peer_process_gone(&address).await);
        holder.abort();
    }

    /// A dying process's listener may still complete the TCP handshake; the
    /// connection is then closed before anything is said: gone.
    #[tokio::test]
    async fn a_connection_closed_before_the_handshake_means_the_process_is_gone() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            drop(stream);
        });
        assert!(peer_process_gone(&address).await);
    }

    /// An outbound lane notices at once that its peer closed the connection.
    #[tokio::test]
    async fn a_lane_notices_that_its_peer_closed_the_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut outbound = TcpStream::connect(address).await.expect("connect");
        let (inbound, _) = listener.accept().await.expect("accept");
        drop(inbound);
        tokio::time::timeout(Duration::from_secs(5), closed_by_peer(&mut outbound))
            .await
            .expect("the close is noticed without a write");
    }
}
