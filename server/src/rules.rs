//! Decisions that both sides of a write make: the service before it queues the write (from the
//! read cache, so most refusals cost no store read) and the store inside the write's
//! transaction (from the rows as they are under the room's lock, so a ban committed before the
//! write is never missed, on any node, whatever the cache says).
//!
//! Only the decision lives here; where the facts come from is the caller's business.

use roam_proto::{MemberStatus, Role, RoomKind};

/// Why the actor may not do what a write needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The room does not exist, was deleted, or is private and the actor is not in it.
    NoRoom,
    /// The actor is banned from the room.
    Banned,
    /// The actor is not an active member.
    NotMember,
    /// The actor's role is below the one needed.
    NeedsRole(Role),
}

impl Refusal {
    /// The message a client sees.
    pub fn message(self) -> String {
        match self {
            Refusal::NoRoom => "room not found".into(),
            Refusal::Banned => "you are banned from this room".into(),
            Refusal::NotMember => "you are not a member of this room".into(),
            Refusal::NeedsRole(min) => format!("this needs the {} role or higher", min.as_str()),
        }
    }
}

/// What a write requires of its actor when it is applied: an active member of `room` with at
/// least `min`. The service sets it from the check it made; the store checks it again under
/// the room's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub room: String,
    pub min: Role,
}

/// The actor's standing in a room, as far as permissions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: Role,
    pub status: MemberStatus,
}

/// The actor's role if they are an active member of a room of `kind` (`None`: no live room)
/// with at least `min`; otherwise why not.
pub fn require_role(
    kind: Option<RoomKind>,
    standing: Option<Standing>,
    min: Role,
) -> Result<Role, Refusal> {
    let kind = kind.ok_or(Refusal::NoRoom)?;
    match standing {
        Some(Standing {
            status: MemberStatus::Banned,
            ..
        }) => Err(Refusal::Banned),
        Some(Standing {
            role,
            status: MemberStatus::Active,
        }) => {
            if role.rank() >= min.rank() {
                Ok(role)
            } else {
                Err(Refusal::NeedsRole(min))
            }
        }
        None if kind == RoomKind::Private => Err(Refusal::NoRoom),
        None => Err(Refusal::NotMember),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(role: Role) -> Option<Standing> {
        Some(Standing {
            role,
            status: MemberStatus::Active,
        })
    }

    #[test]
    fn a_ban_refuses_whatever_the_role() {
        let banned = Some(Standing {
            role: Role::Owner,
            status: MemberStatus::Banned,
        });
        assert_eq!(
            require_role(Some(RoomKind::Public), banned, Role::Guest),
            Err(Refusal::Banned)
        );
    }

    #[test]
    fn roles_rank() {
        let public = Some(RoomKind::Public);
        assert_eq!(
            require_role(public, active(Role::Member), Role::Guest),
            Ok(Role::Member)
        );
        assert_eq!(
            require_role(public, active(Role::Member), Role::Admin),
            Err(Refusal::NeedsRole(Role::Admin))
        );
    }

    #[test]
    fn strangers_and_missing_rooms() {
        assert_eq!(
            require_role(Some(RoomKind::Public), None, Role::Guest),
            Err(Refusal::NotMember)
        );
        assert_eq!(
            require_role(Some(RoomKind::Private), None, Role::Guest),
            Err(Refusal::NoRoom)
        );
        assert_eq!(
            require_role(None, active(Role::Owner), Role::Guest),
            Err(Refusal::NoRoom)
        );
    }
}
