//! Cluster status and membership changes on the leader.

use crate::service::NodeService;
use crate::shared::Shared;
use crate::state::{check_address, MemberAddress, NodeCommand};
use crate::wire::{ForwardRequest, ForwardResponse};
use std::sync::Arc;
use std::time::Duration;
use understudy_api::service::{AddMember, ClusterStatus, MemberStatus, ServiceError};
use understudy_raft::{MembershipChange, Role};
use understudy_types::limits::{RAFT_LEARNER_PROMOTION_LAG_ENTRIES_MAX, RAFT_MEMBERS_MAX};
use understudy_types::NodeId;

/// How often the promotion task checks a learner's progress.
const PROMOTION_POLL: Duration = Duration::from_millis(100);
/// How long a learner may take to catch up before the promotion is abandoned.
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(300);

fn invalid(detail: impl Into<String>) -> ServiceError {
    ServiceError::InvalidClusterRequest {
        detail: detail.into(),
    }
}

/// The cluster as this node sees it.
pub fn cluster_status(shared: &Shared) -> Result<ClusterStatus, ServiceError> {
    let view = shared.status_view();
    let Some(status) = view.status else {
        return Err(ServiceError::Unavailable {
            detail: "the node is starting".into(),
        });
    };
    let state = shared
        .state
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let members = status
        .membership
        .members()
        .map(|member| {
            let id = member.get();
            let is_self = id == shared.id;
            let role = if status.membership.learners.contains(&member) {
                "learner"
            } else if status.leader == Some(member) {
                "leader"
            } else if is_self {
                match status.role {
                    Role::Leader => "leader",
                    Role::Follower => "follower",
                    Role::PreCandidate | Role::Candidate => "candidate",
                }
            } else if status.leader.is_some() {
                "follower"
            } else {
                "unknown"
            };
            let address = state.addresses.get(&id);
            MemberStatus {
                id,
                role: role.to_string(),
                peer_address: address
                    .map(|address| address.peer.clone())
                    .or_else(|| shared.initial_peers.get(&id).cloned())
                    .unwrap_or_default(),
                client_address: address
                    .map(|address| address.client.clone())
                    .or_else(|| is_self.then(|| shared.advertise_client.clone()))
                    .unwrap_or_default(),
                match_index: view.match_indexes.get(&id).copied(),
                commit_index: is_self.then_some(status.commit_index.get()),
                applied_index: is_self.then_some(status.applied_index.get()),
            }
        })
        .collect();
    Ok(ClusterStatus {
        node_id: shared.id,
        leader_id: status.leader.map(NodeId::get),
        term: status.term.get(),
        members,
    })
}

/// How long `GET /v1/cluster` waits for each member's own view.
const MEMBER_STATUS_DEADLINE: Duration = Duration::from_millis(300);

/// The cluster as this node sees it, completed by asking every other member
/// (over the peer transport, in parallel, briefly) for its own commit and
/// applied index, and the leader for every member's match index. A member that
/// does not answer in time is shown with role `unknown`.
pub async fn cluster_status_gathered(
    shared: &Arc<Shared>,
    pool: &crate::transport::ForwardPool,
) -> Result<ClusterStatus, ServiceError> {
    let mut view = cluster_status(shared)?;
    let deadline = tokio::time::Instant::now() + MEMBER_STATUS_DEADLINE;
    let others: Vec<u64> = view
        .members
        .iter()
        .map(|member| member.id)
        .filter(|&id| id != shared.id)
        .collect();
    let queries = others.iter().map(|&id| async move {
        let answer =
            crate::transport::forward(shared, pool, id, ForwardRequest::LocalStatus, deadline)
                .await;
        match answer {
            Ok(ForwardResponse::Cluster(Ok(status))) if status.node_id == id => Some(status),
            _ => None,
        }
    });
    let answers = futures::future::join_all(queries).await;
    let leader_view = answers
        .iter()
        .flatten()
        .find(|status| Some(status.node_id) == status.leader_id)
        .cloned();
    for (id, answer) in others.iter().zip(answers) {
        let Some(member) = view.members.iter_mut().find(|member| member.id == *id) else {
            continue;
        };
        match answer.and_then(|status| status.members.into_iter().find(|own| own.id == *id)) {
            Some(own) => {
                // Its own word on its role and indexes is the freshest there is.
                member.commit_index = own.commit_index;
                member.applied_index = own.applied_index;
                member.role = own.role;
            }
            None => member.role = "unknown".to_string(),
        }
    }
    if let Some(leader_view) = leader_view {
        for member in &mut view.members {
            if let Some(entry) = leader_view
                .members
                .iter()
                .find(|entry| entry.id == member.id)
            {
                member.match_index = member.match_index.or(entry.match_index);
            }
        }
    }
    Ok(view)
}

/// Adds a member on the leader: replicate its addresses, add it as a learner,
/// and promote it in the background once it caught up.
pub async fn add_local(
    service: &NodeService,
    member: AddMember,
) -> Result<ClusterStatus, ServiceError> {
    check_address(&member.peer_address).map_err(invalid)?;
    check_address(&member.client_address).map_err(invalid)?;
    if member.id == 0 {
        return Err(invalid("node id 0 is reserved"));
    }
    let current = cluster_status(service.shared())?;
    if current
        .members
        .iter()
        .any(|existing| existing.id == member.id)
    {
        return Err(invalid(format!("node {} is already a member", member.id)));
    }
    if current.members.len() >= RAFT_MEMBERS_MAX {
        return Err(invalid("the cluster has the maximum number of members"));
    }
    // Addresses first, so that by the time the learner exists every node knows
    // where to reach it.
    service
        .propose_command(NodeCommand::SetMemberAddresses {
            id: member.id,
            address: MemberAddress {
                peer: member.peer_address.clone(),
                client: member.client_address.clone(),
            },
        })
        .await?;
    service
        .change_membership(MembershipChange::AddLearner(NodeId(member.id)))
        .await?;
    tracing::info!(member = member.id, "added learner");
    spawn_promotion(service.shared().clone(), service.clone(), member.id);
    cluster_status(service.shared())
}

/// Removes a member on the leader.
pub async fn remove_local(service: &NodeService, id: u64) -> Result<ClusterStatus, ServiceError> {
    let current = cluster_status(service.shared())?;
    if !current.members.iter().any(|existing| existing.id == id) {
        return Err(invalid(format!("node {id} is not a member")));
    }
    service
        .change_membership(MembershipChange::Remove(NodeId(id)))
        .await?;
    tracing::info!(member = id, "removing member");
    cluster_status(service.shared())
}

/// Promotes learner `id` once its match index is close to the leader's log.
fn spawn_promotion(shared: Arc<Shared>, service: NodeService, id: u64) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + PROMOTION_TIMEOUT;
        // The learner counts as caught up once it holds everything the leader had
        // when it was added (and stays within the core's lag limit).
        let target = shared
            .status_view()
            .status
            .map_or(0, |status| status.last_index.get());
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(PROMOTION_POLL).await;
            if shared.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let view = shared.status_view();
            let Some(status) = view.status else { continue };
            if status.role != Role::Leader {
                return;
            }
            if !status.membership.learners.contains(&NodeId(id)) {
                return;
            }
            let caught_up = view.match_indexes.get(&id).is_some_and(|matched| {
                *matched >= target
                    && matched + RAFT_LEARNER_PROMOTION_LAG_ENTRIES_MAX >= status.last_index.get()
            });
            if caught_up
                && service
                    .change_membership(MembershipChange::PromoteLearner(NodeId(id)))
                    .await
                    .is_ok()
            {
                tracing::info!(member = id, "promoted learner to voter");
                return;
            }
        }
    });
}

/// Records a member's addresses on the leader.
pub async fn register_local(
    service: &NodeService,
    id: u64,
    peer: String,
    client: String,
) -> Result<ClusterStatus, ServiceError> {
    check_address(&peer).map_err(invalid)?;
    check_address(&client).map_err(invalid)?;
    service
        .propose_command(NodeCommand::SetMemberAddresses {
            id,
            address: MemberAddress { peer, client },
        })
        .await?;
    cluster_status(service.shared())
}

/// How often a node checks that the replicated state knows its own addresses.
const REGISTRATION_POLL: Duration = Duration::from_millis(200);

/// Keeps this node's own addresses in the replicated state (initial members are
/// known only by peer address until they register their client URL).
pub fn spawn_self_registration(
    service: NodeService,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shared = service.shared().clone();
        let wanted = MemberAddress {
            peer: shared.peer_address.clone(),
            client: shared.advertise_client.clone(),
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REGISTRATION_POLL) => {}
                _ = shutdown.changed() => return,
            }
            let known = shared
                .state
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .addresses
                .get(&shared.id)
                .cloned();
            if known.as_ref() == Some(&wanted) || service.leader_id().is_none() {
                continue;
            }
            let request = crate::wire::ForwardRequest::RegisterAddress {
                id: shared.id,
                peer: wanted.peer.clone(),
                client: wanted.client.clone(),
            };
            if let Err(error) = service.route_cluster(request).await {
                tracing::debug!(%error, "address registration failed; will retry");
            }
        }
    })
}
