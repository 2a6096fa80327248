//! `understudy status` and `understudy members add|remove`.

use crate::common::{print_json, CliError, ClientArgs, Output};
use clap::Subcommand;
use understudy_client::{AddMember, Client, ClusterStatus};

/// How long status waits for any one member (a down member must not stall it).
const MEMBER_QUERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Membership commands.
#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    /// Start it afterwards with `understudy node` without --initial-cluster.
    Add {
        /// The new node's id (never used before).
        id: u64,
        /// Where peers will reach it (HOST:PORT).
        #[arg(long)]
        peer: String,
        /// Where clients will reach it (http://HOST:PORT).
        #[arg(long)]
        client: String,
    },
    /// Remove a node from the configuration.
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// Prints the members as the leader sees them. Every member's own commit and
/// applied index come with the answer: the answering node gathers them
/// (`GET /v1/cluster`), so the CLI does not ask each member itself.
pub async fn status(args: ClientArgs) -> Result<(), CliError> {
    let client = args.client()?;
    let mut view = client.cluster().await?;
    if let Some(leader_view) = leader_view(&client, &view).await {
        view = leader_view;
    }
    match args.output {
        Output::Json => print_json(&view),
        Output::Table => {
            println!("{}", format_status(&view));
            Ok(())
        }
    }
}

/// Asks the leader itself, when the answering node is not the leader; `None`
/// (keep the first view) if that fails.
async fn leader_view(client: &Client, view: &ClusterStatus) -> Option<ClusterStatus> {
    let leader_id = view.leader_id?;
    if leader_id == view.node_id {
        return None;
    }
    let leader = view.members.iter().find(|member| member.id == leader_id)?;
    let leader_client = client
        .with_endpoints(vec![leader.client_address.clone()], MEMBER_QUERY_DEADLINE)
        .ok()?;
    leader_client.cluster().await.ok()
}

/// A member registers its client URL in the replicated state once it is up and
/// a leader is known (within a fraction of a second); until then it is unknown.
fn client_address_shown(address: &str) -> &str {
    if address.is_empty() {
        "(not registered yet)"
    } else {
        address
    }
}

fn format_status(view: &ClusterStatus) -> String {
    let leader_commit = view
        .leader_id
        .and_then(|leader| view.members.iter().find(|member| member.id == leader))
        .and_then(|leader| leader.commit_index);
    let show = |value: Option<u64>| value.map_or("-".to_string(), |value| value.to_string());
    let mut text = format!(
        "{:>4}  {:<9}  {:>6}  {:>8}  {:>8}  {:>8}  {:>6}  CLIENT",
        "ID", "ROLE", "TERM", "COMMIT", "APPLIED", "MATCH", "LAG"
    );
    for member in &view.members {
        let lag = match (leader_commit, member.match_index) {
            (Some(commit), Some(matched)) => Some(commit.saturating_sub(matched)),
            _ => None,
        };
        text.push_str(&format!(
            "\n{:>4}  {:<9}  {:>6}  {:>8}  {:>8}  {:>8}  {:>6}  {}",
            member.id,
            member.role,
            view.term,
            show(member.commit_index),
            show(member.applied_index),
            show(member.match_index),
            show(lag),
            client_address_shown(&member.client_address)
        ));
    }
    let leader = view
        .leader_id
        .map_or("none known".to_string(), |id| id.to_string());
    text.push_str(&format!(
        "\n(as seen by node {}; leader {leader})",
        view.node_id
    ));
    text
}

/// Runs a membership change and prints the resulting configuration.
pub async fn members(args: ClientArgs, command: MembersCommand) -> Result<(), CliError> {
    let client = args.client()?;
    let view = match command {
        MembersCommand::Add {
            id,
            peer,
            client: client_address,
        } => {
            if id == 0 {
                return Err(CliError::Usage("the node id must be positive".into()));
            }
            let member = AddMember {
                id,
                peer_address: peer,
                client_address,
            };
            client.add_member(&member).await?
        }
        MembersCommand::Remove { id } => client.remove_member(id).await?,
    };
    match args.output {
        Output::Json => print_json(&view),
        Output::Table => {
            println!("{}", format_status(&view));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_client::MemberStatus;

    #[test]
    fn status_table_shows_lag_from_the_leaders_commit() {
        let member = |id, role: &str, matched| MemberStatus {
            id,
            role: role.into(),
            peer_address: format!("127.0.0.1:{}", 2479 + id),
            client_address: format!("http://127.0.0.1:{}", 2378 + id),
            match_index: Some(matched),
            commit_index: Some(10),
            applied_index: Some(10),
        };
        let view = ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            term: 3,
            members: vec![member(1, "leader", 10), member(2, "follower", 7)],
        };
        let table = format_status(&view);
        let follower_line = table.lines().nth(2).unwrap();
        assert!(follower_line.contains("follower"), "{table}");
        assert!(
            follower_line.split_whitespace().nth(6) == Some("3"),
            "{table}"
        );
    }
}
