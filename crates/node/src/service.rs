//! Client operations through any node: [`NodeService`] implements the API's
//! `ClusterService`, proposing on the leader and forwarding from followers.
//!
//! The 503/504 split: `Unavailable` only when nothing was appended anywhere (the
//! core refused the proposal, or no leader could be reached before the request
//! was sent); once a proposal was accepted or a forward sent, every failure is
//! `Timeout`.

use crate::driver::{Input, ProposeFailure};
use crate::process::service::NodeProcesses;
use crate::process::table::{ProcessCommand, ProcessOutcome, ProcessRefusal};
use crate::process::ProcessRuntime;
use crate::shared::Shared;
use crate::state::{Applied, NodeCommand};
use crate::transport::{forward, ForwardFailure, ForwardPool};
use crate::wire::{ForwardRequest, ForwardResponse, StdinFailure, WireError};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use understudy_api::process_service::{ProcessError, ProcessService};
use understudy_api::service::{
    AddMember, ClusterService, ClusterStatus, Consistency, GetResult, RangeResult, ServiceError,
};
use understudy_kv::{Command, Event, KeySelector, Response};
use understudy_raft::{MembershipChange, RaftError};

/// A client request's whole budget on the node it reached: looking for a leader,
/// forwarding, proposing and waiting for the apply. The contract: even the
/// minority side of a partition answers (503 or 504) within 3 seconds.
pub const REQUEST_DEADLINE: Duration = Duration::from_millis(2900);
/// The budget of a leader serving a forwarded request: shorter than the
/// forwarder's, so that its precise answer arrives before the forwarder gives up.
pub const FORWARDED_DEADLINE: Duration = Duration::from_millis(2400);
/// The budget of a membership request (two proposals, possibly forwarded).
pub const CLUSTER_REQUEST_DEADLINE: Duration = Duration::from_secs(6);
/// Pause between attempts while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The node's client-facing service.
#[derive(Clone, Debug)]
pub struct NodeService {
    shared: Arc<Shared>,
    inputs: SyncSender<Input>,
    /// Connections to the leader for forwarding, shared by clones.
    forward_pool: Arc<ForwardPool>,
    /// The node's process runtime (set once at start; weak: the node owns it).
    processes: Arc<OnceLock<Weak<ProcessRuntime>>>,
}

fn unavailable(detail: impl Into<String>) -> ServiceError {
    ServiceError::Unavailable {
        detail: detail.into(),
    }
}

fn timeout(detail: impl Into<String>) -> ServiceError {
    ServiceError::Timeout {
        detail: detail.into(),
    }
}

/// What a local attempt concluded.
enum Attempt<T> {
    Done(Result<T, ServiceError>),
    /// Not the leader; the hint, if any.
    NotLeader(Option<u64>),
}

impl NodeService {
    /// Forwards `request` to `leader` over this node's connection pool.
    async fn forward_to(
        &self,
        leader: u64,
        request: ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardResponse, ForwardFailure> {
        forward(&self.shared, &self.forward_pool, leader, request, deadline).await
    }

    /// A service over the driver's `inputs`.
    pub fn new(shared: Arc<Shared>, inputs: SyncSender<Input>) -> NodeService {
        NodeService {
            shared,
            inputs,
            forward_pool: Arc::new(ForwardPool::default()),
            processes: Arc::new(OnceLock::new()),
        }
    }

    /// The shared node state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn submit(&self, input: Input) -> Result<(), ServiceError> {
        self.inputs
            .try_send(input)
            .map_err(|_| unavailable("the node is overloaded or stopping"))
    }

    /// Proposes `command` locally and waits for it to apply.
    async fn propose_local(&self, command: Bytes, deadline: Instant) -> Attempt<Applied> {
        let (reply, answer) = oneshot::channel();
        if let Err(error) = self.submit(Input::Propose { command, reply }) {
            return Attempt::Done(Err(error));
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Ok(applied))) => Attempt::Done(Ok(applied)),
            Ok(Ok(Err(ProposeFailure::Refused(RaftError::NotLeader { leader_hint })))) => {
                Attempt::NotLeader(leader_hint.map(|id| id.get()))
            }
            Ok(Ok(Err(ProposeFailure::Refused(error)))) => {
                Attempt::Done(Err(unavailable(error.to_string())))
            }
            Ok(Ok(Err(ProposeFailure::Lost))) => {
                Attempt::Done(Err(timeout("the entry lost its log slot")))
            }
            Ok(Err(_)) => Attempt::Done(Err(timeout("the node stopped"))),
            Err(_) => Attempt::Done(Err(timeout("the write did not apply in time"))),
        }
    }

    /// Waits until a linearizable read may be served locally.
    async fn read_barrier(&self, deadline: Instant) -> Attempt<()> {
        let (reply, answer) = oneshot::channel();
        if let Err(error) = self.submit(Input::ReadIndex { reply }) {
            return Attempt::Done(Err(error));
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Ok(()))) => Attempt::Done(Ok(())),
            Ok(Ok(Err(hint))) => Attempt::NotLeader(hint),
            Ok(Err(_)) => Attempt::Done(Err(unavailable("the node stopped"))),
            Err(_) => Attempt::Done(Err(unavailable("no quorum confirmed the read in time"))),
        }
    }

    /// Runs `local` until it succeeds here or names another leader, then forwards
    /// `request` there. `Unavailable` if no leader answers before the search
    /// deadline.
    async fn route<T, F, Fut>(
        &self,
        request: ForwardRequest,
        mut local: F,
    ) -> Result<RouteOutcome<T>, ServiceError>
    where
        F: FnMut(Instant) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        loop {
            let hint = match local(deadline).await {
                Attempt::Done(result) => return result.map(RouteOutcome::Local),
                Attempt::NotLeader(hint) => hint,
            };
            if let Some(leader) = hint.filter(|leader| *leader != self.shared.id) {
                match self.forward_to(leader, request.clone(), deadline).await {
                    // A node that was no longer the leader appended nothing: retry.
                    Ok(response) if never_appended(&response) => {}
                    Ok(response) => return Ok(RouteOutcome::Forwarded(response)),
                    Err(ForwardFailure { sent: true, detail }) => return Err(timeout(detail)),
                    Err(ForwardFailure { sent: false, .. }) => {}
                }
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(unavailable("no leader reachable"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Serves a request another node forwarded; never forwards again (so a
    /// request cannot loop), answering `Unavailable` when not the leader.
    pub async fn serve_forwarded(&self, request: ForwardRequest) -> ForwardResponse {
        let deadline = Instant::now() + FORWARDED_DEADLINE;
        let not_leader = || WireError::Unavailable("not the leader".into());
        match request {
            ForwardRequest::Write(command) => {
                ForwardResponse::Write(match self.write_local(&command, deadline).await {
                    Attempt::Done(result) => result.map_err(to_wire),
                    Attempt::NotLeader(_) => Err(not_leader()),
                })
            }
            ForwardRequest::Get(key) => {
                ForwardResponse::Get(match self.read_barrier(deadline).await {
                    Attempt::Done(Ok(())) => Ok(self.get_local(&key)),
                    Attempt::Done(Err(error)) => Err(to_wire(error)),
                    Attempt::NotLeader(_) => Err(not_leader()),
                })
            }
            ForwardRequest::Range { prefix, limit } => {
                ForwardResponse::Range(match self.read_barrier(deadline).await {
                    Attempt::Done(Ok(())) => {
                        self.range_local(&prefix, limit as usize).map_err(to_wire)
                    }
                    Attempt::Done(Err(error)) => Err(to_wire(error)),
                    Attempt::NotLeader(_) => Err(not_leader()),
                })
            }
            ForwardRequest::AddMember(member) => ForwardResponse::Cluster(
                crate::membership::add_local(self, member)
                    .await
                    .map_err(to_wire),
            ),
            ForwardRequest::RemoveMember(id) => ForwardResponse::Cluster(
                crate::membership::remove_local(self, id)
                    .await
                    .map_err(to_wire),
            ),
            ForwardRequest::LocalStatus => ForwardResponse::Cluster(
                crate::membership::cluster_status(&self.shared).map_err(to_wire),
            ),
            ForwardRequest::RegisterAddress { id, peer, client } => ForwardResponse::Cluster(
                crate::membership::register_local(self, id, peer, client)
                    .await
                    .map_err(to_wire),
            ),
            ForwardRequest::Process(command) => {
                ForwardResponse::Process(match self.process_local(&command, deadline).await {
                    Attempt::Done(result) => result.map_err(to_wire),
                    Attempt::NotLeader(_) => Err(not_leader()),
                })
            }
            ForwardRequest::Pair(message) => {
                let Some(runtime) = self.process_runtime() else {
                    return ForwardResponse::Pair(Vec::new());
                };
                ForwardResponse::Pair(handle_pair_here(runtime, message).await)
            }
            ForwardRequest::ProcessStdin {
                pid,
                bytes,
                eof,
                request,
            } => {
                let Some(runtime) = self.process_runtime() else {
                    let detail = "the node is stopping".to_string();
                    return ForwardResponse::ProcessStdin(Err(StdinFailure::Unavailable(detail)));
                };
                let result = runtime.local_stdin(pid, bytes, eof, request).await;
                ForwardResponse::ProcessStdin(result.map_err(|error| match error {
                    ProcessError::BadRequest { detail } => StdinFailure::BadRequest(detail),
                    other => StdinFailure::Unavailable(other.to_string()),
                }))
            }
            ForwardRequest::ProcessEntry { pid } => {
                let state = self.shared.state.read().unwrap_or_else(|p| p.into_inner());
                ForwardResponse::ProcessEntry(state.processes.process(pid).cloned().map(Box::new))
            }
            ForwardRequest::ProcessLive { pid } => ForwardResponse::ProcessLive(
                self.process_runtime()
                    .and_then(|runtime| runtime.live_status(pid)),
            ),
        }
    }

    /// This node's process runtime, while the node runs.
    pub(crate) fn process_runtime(&self) -> Option<Arc<ProcessRuntime>> {
        self.processes.get().and_then(Weak::upgrade)
    }

    /// Attaches the node's process runtime (once, at start).
    pub(crate) fn attach_processes(&self, runtime: &Arc<ProcessRuntime>) {
        let _ = self.processes.set(Arc::downgrade(runtime));
    }

    /// Sends `request` to node `to` (any node, not only the leader).
    pub(crate) async fn forward_to_node(
        &self,
        to: u64,
        request: ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardResponse, ForwardFailure> {
        self.forward_to(to, request, deadline).await
    }

    /// Commits a process-table change through the leader and returns what
    /// applying it produced.
    pub(crate) async fn coordinate(
        &self,
        command: ProcessCommand,
    ) -> Result<Result<ProcessOutcome, ProcessRefusal>, ServiceError> {
        let request = ForwardRequest::Process(command.clone());
        match self
            .route(request, |deadline| self.process_local(&command, deadline))
            .await?
        {
            RouteOutcome::Local(outcome) => Ok(outcome),
            RouteOutcome::Forwarded(ForwardResponse::Process(result)) => result.map_err(from_wire),
            RouteOutcome::Forwarded(_) => Err(unexpected()),
        }
    }

    async fn process_local(
        &self,
        command: &ProcessCommand,
        deadline: Instant,
    ) -> Attempt<Result<ProcessOutcome, ProcessRefusal>> {
        let encoded = NodeCommand::Process(command.clone()).encode();
        if let Err(error) = crate::state::check_command_size(&encoded) {
            return Attempt::Done(Err(ServiceError::Rejected(error)));
        }
        match self.propose_local(encoded, deadline).await {
            Attempt::Done(Ok(Applied::Process(outcome))) => Attempt::Done(Ok(outcome)),
            Attempt::Done(Ok(_)) => {
                Attempt::Done(Err(timeout("the entry applied as another command")))
            }
            Attempt::Done(Err(error)) => Attempt::Done(Err(error)),
            Attempt::NotLeader(hint) => Attempt::NotLeader(hint),
        }
    }

    async fn write_local(&self, command: &Command, deadline: Instant) -> Attempt<Response> {
        let encoded = NodeCommand::Kv(command.clone()).encode();
        if let Err(error) = crate::state::check_command_size(&encoded) {
            return Attempt::Done(Err(ServiceError::Rejected(error)));
        }
        match self.propose_local(encoded, deadline).await {
            Attempt::Done(Ok(Applied::Kv(outcome))) => {
                Attempt::Done(outcome.map_err(ServiceError::Rejected))
            }
            Attempt::Done(Ok(Applied::Addresses | Applied::Process(_))) => {
                Attempt::Done(Err(timeout("the entry applied as another command")))
            }
            Attempt::Done(Err(error)) => Attempt::Done(Err(error)),
            Attempt::NotLeader(hint) => Attempt::NotLeader(hint),
        }
    }

    /// Proposes a node command on this node (the leader) and waits for it.
    pub(crate) async fn propose_command(
        &self,
        command: NodeCommand,
    ) -> Result<Applied, ServiceError> {
        match self
            .propose_local(command.encode(), Instant::now() + REQUEST_DEADLINE)
            .await
        {
            Attempt::Done(result) => result,
            Attempt::NotLeader(_) => Err(unavailable("not the leader")),
        }
    }

    /// Asks the core for a membership change and waits until it is committed and
    /// applied here (so a 200 always describes a committed configuration).
    pub(crate) async fn change_membership(
        &self,
        change: MembershipChange,
    ) -> Result<(), ServiceError> {
        let deadline = Instant::now() + REQUEST_DEADLINE;
        let (reply, answer) = oneshot::channel();
        self.submit(Input::ChangeMembership { change, reply })?;
        let index = match answer.await {
            Ok(Ok((index, _term))) => index,
            Ok(Err(RaftError::NotLeader { .. })) => return Err(unavailable("not the leader")),
            Ok(Err(error)) => {
                return Err(ServiceError::InvalidClusterRequest {
                    detail: error.to_string(),
                })
            }
            Err(_) => return Err(unavailable("the node stopped")),
        };
        // From here the change is in the log: any failure is "outcome unknown".
        // Wait until a published status view shows it applied; a new leader may
        // have replaced the entry, so judge by that view's configuration. The
        // view follows the applied index by at most a driver turn, hence the
        // short bound on each wait besides the wake-up on every applied entry.
        let mut applied = self.shared.applied.subscribe();
        let membership = loop {
            let view = self.shared.status_view();
            if let Some(status) = view.status.filter(|status| status.applied_index >= index) {
                break status.membership;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timeout("the membership change was not committed in time"));
            }
            let wake = deadline.min(now + Duration::from_millis(5));
            if let Ok(Err(_)) = tokio::time::timeout_at(wake, applied.changed()).await {
                return Err(timeout("the node stopped"));
            }
        };
        let took_effect = match change {
            MembershipChange::AddLearner(node) => membership.contains(node),
            MembershipChange::PromoteLearner(node) => membership.voters.contains(&node),
            MembershipChange::Remove(node) => !membership.contains(node),
        };
        if took_effect {
            Ok(())
        } else {
            Err(timeout(
                "leadership changed before the membership change committed",
            ))
        }
    }

    fn get_local(&self, key: &[u8]) -> (Option<understudy_kv::KeyValue>, u64) {
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (state.store.get(key).cloned(), state.store.revision())
    }

    fn range_local(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<(Vec<understudy_kv::KeyValue>, bool, u64), ServiceError> {
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (items, more) = state
            .store
            .range(prefix, limit)
            .map_err(ServiceError::Rejected)?;
        Ok((items, more, state.store.revision()))
    }

    /// Whether this node believes it leads.
    pub(crate) fn leader_id(&self) -> Option<u64> {
        self.shared
            .status_view()
            .status
            .and_then(|status| status.leader.map(|id| id.get()))
    }

    /// Forwards a membership request to the leader, or runs it here.
    pub(crate) async fn route_cluster(
        &self,
        request: ForwardRequest,
    ) -> Result<ClusterStatus, ServiceError> {
        let deadline = Instant::now() + CLUSTER_REQUEST_DEADLINE;
        loop {
            match self.leader_id() {
                Some(leader) if leader == self.shared.id => {
                    return match request {
                        ForwardRequest::AddMember(member) => {
                            crate::membership::add_local(self, member).await
                        }
                        ForwardRequest::RemoveMember(id) => {
                            crate::membership::remove_local(self, id).await
                        }
                        ForwardRequest::RegisterAddress { id, peer, client } => {
                            crate::membership::register_local(self, id, peer, client).await
                        }
                        _ => Err(unavailable("not a membership request")),
                    }
                }
                Some(leader) => match self.forward_to(leader, request.clone(), deadline).await {
                    Ok(ForwardResponse::Cluster(result)) => return result.map_err(from_wire),
                    Ok(_) => return Err(timeout("unexpected answer")),
                    Err(ForwardFailure { sent: true, detail }) => return Err(timeout(detail)),
                    Err(ForwardFailure { sent: false, .. }) => {}
                },
                None => {}
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(unavailable("no leader reachable"));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Whether a forwarded request's answer says nothing was appended.
fn never_appended(response: &ForwardResponse) -> bool {
    let unavailable = |error: &WireError| matches!(error, WireError::Unavailable(_));
    match response {
        ForwardResponse::Write(Err(error))
        | ForwardResponse::Get(Err(error))
        | ForwardResponse::Range(Err(error))
        | ForwardResponse::Cluster(Err(error)) => unavailable(error),
        _ => false,
    }
}

/// Where a routed request was served.
enum RouteOutcome<T> {
    Local(T),
    Forwarded(ForwardResponse),
}

fn to_wire(error: ServiceError) -> WireError {
    match error {
        ServiceError::Unavailable { detail } => WireError::Unavailable(detail),
        ServiceError::Timeout { detail } => WireError::Timeout(detail),
        ServiceError::Rejected(error) => WireError::Rejected(error),
        ServiceError::InvalidClusterRequest { detail } => WireError::InvalidCluster(detail),
    }
}

fn from_wire(error: WireError) -> ServiceError {
    match error {
        WireError::Unavailable(detail) => ServiceError::Unavailable { detail },
        WireError::Timeout(detail) => ServiceError::Timeout { detail },
        WireError::Rejected(error) => ServiceError::Rejected(error),
        WireError::InvalidCluster(detail) => ServiceError::InvalidClusterRequest { detail },
    }
}

fn unexpected() -> ServiceError {
    timeout("the leader answered with an unexpected response")
}

#[async_trait]
impl ClusterService for NodeService {
    async fn write(&self, command: Command) -> Result<Response, ServiceError> {
        let request = ForwardRequest::Write(command.clone());
        match self
            .route(request, |deadline| self.write_local(&command, deadline))
            .await?
        {
            RouteOutcome::Local(response) => Ok(response),
            // A leader that was deposed before proposing answers Unavailable:
            // nothing was appended, so that answer is passed on as it is.
            RouteOutcome::Forwarded(ForwardResponse::Write(result)) => result.map_err(from_wire),
            RouteOutcome::Forwarded(_) => Err(unexpected()),
        }
    }

    async fn get(&self, key: Bytes, consistency: Consistency) -> Result<GetResult, ServiceError> {
        let (item, revision) = match consistency {
            Consistency::Serializable => self.get_local(&key),
            Consistency::Linearizable => {
                match self
                    .route(ForwardRequest::Get(key.clone()), |deadline| {
                        self.read_barrier(deadline)
                    })
                    .await?
                {
                    RouteOutcome::Local(()) => self.get_local(&key),
                    RouteOutcome::Forwarded(ForwardResponse::Get(result)) => {
                        result.map_err(from_wire)?
                    }
                    RouteOutcome::Forwarded(_) => return Err(unexpected()),
                }
            }
        };
        Ok(GetResult { item, revision })
    }

    async fn range(
        &self,
        prefix: Bytes,
        limit: usize,
        consistency: Consistency,
    ) -> Result<RangeResult, ServiceError> {
        let (items, more, revision) = match consistency {
            Consistency::Serializable => self.range_local(&prefix, limit)?,
            Consistency::Linearizable => {
                let request = ForwardRequest::Range {
                    prefix: prefix.clone(),
                    limit: limit as u64,
                };
                match self
                    .route(request, |deadline| self.read_barrier(deadline))
                    .await?
                {
                    RouteOutcome::Local(()) => self.range_local(&prefix, limit)?,
                    RouteOutcome::Forwarded(ForwardResponse::Range(result)) => {
                        result.map_err(from_wire)?
                    }
                    RouteOutcome::Forwarded(_) => return Err(unexpected()),
                }
            }
        };
        Ok(RangeResult {
            items,
            more,
            revision,
        })
    }

    async fn changes(
        &self,
        selector: KeySelector,
        from_revision: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Event>, ServiceError> {
        let deadline = Instant::now() + wait;
        let mut applied = self.shared.applied.subscribe();
        loop {
            let events = self
                .shared
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .store
                .changes_since(from_revision, &selector, limit)
                .map_err(ServiceError::Rejected)?;
            if !events.is_empty() {
                return Ok(events);
            }
            // Wakes on the next applied entry, or gives up at the deadline.
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn cluster(&self) -> Result<ClusterStatus, ServiceError> {
        crate::membership::cluster_status_gathered(&self.shared, &self.forward_pool).await
    }

    async fn add_member(&self, member: AddMember) -> Result<ClusterStatus, ServiceError> {
        self.route_cluster(ForwardRequest::AddMember(member)).await
    }

    async fn remove_member(&self, id: u64) -> Result<ClusterStatus, ServiceError> {
        self.route_cluster(ForwardRequest::RemoveMember(id)).await
    }

    fn metrics(&self) -> String {
        let mut text = self.shared.metrics.render();
        if let Some(runtime) = self.process_runtime() {
            text.push_str(&runtime.render_metrics());
        }
        text
    }

    fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    fn processes(&self) -> Option<Arc<dyn ProcessService>> {
        let runtime = self.process_runtime()?;
        Some(Arc::new(NodeProcesses::new(self.clone(), &runtime)))
    }
}

/// Hands a pair message to this node's backup, which writes and syncs its
/// records before answering. On a multi-threaded runtime the sync runs in
/// place (`block_in_place`): a hop to the blocking pool and back cost a thread
/// wake-up each way on every append, on the path every stdin write waits for
/// (measured: about a fifth more paired throughput without it). The
/// connection's task waits for the answer either way.
async fn handle_pair_here(
    runtime: Arc<ProcessRuntime>,
    message: understudy_pair::PairMessage,
) -> Vec<understudy_pair::PairMessage> {
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(move || runtime.handle_pair(message));
    }
    tokio::task::spawn_blocking(move || runtime.handle_pair(message))
        .await
        .unwrap_or_default()
}
