//! The rules of Roam, each decided in one function: who may do what to a room, its members
//! and its invitations.
//!
//! Both sides of a write call the same function. The service calls it before it queues the
//! write, with facts from the read cache, so most refusals cost no store read and no write
//! slot. The store's write engine (`store::write`) calls it again inside the write's
//! transaction, with facts read under the room's lock, so a ban, a demotion or an accepted
//! invitation committed in between, on any node, is never missed. Only the decision lives
//! here; where the facts come from is the caller's business.

use roam_proto::{Invitation, InvitationStatus, Member, MemberStatus, Role, RoomKind};

/// Why a write is refused. Each maps to one client-facing error (see `error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The room does not exist, was deleted, or is private and the actor is not in it.
    NoRoom,
    /// The actor is banned from the room.
    Banned,
    /// The actor is not an active member.
    NotMember,
    /// The actor's role is below the one needed.
    NeedsRole(Role),
    /// The actor is already an active member (joining twice).
    AlreadyMember,
    /// The user a write is about is banned from the room (inviting them).
    TargetBanned,
    /// The user a write is about is already an active member (inviting them).
    TargetAlreadyMember,
    /// Banning a user who is banned already.
    AlreadyBanned,
    /// Unbanning a user who is not banned.
    NotBanned,
    /// The user a write is about is not an active member (changing their role).
    NoSuchMember,
    /// The owner leaves only after handing the room over.
    OwnerMustTransfer,
    /// Banning oneself.
    SelfBan,
    /// Banning someone of an equal or higher role.
    BanWeakerOnly,
    /// A role change the actor may not make: their own, of an equal or stronger member, or to
    /// a role not below theirs.
    RoleChangeNotAllowed,
    /// The owner role is given only by `room.transfer`.
    OwnershipByTransfer,
    /// Only the owner hands the room over.
    NotOwner,
    /// Handing the room over to its owner.
    AlreadyOwner,
    /// Handing the room over to someone who is not an active member.
    TransferToNonMember,
    /// Granting (by invitation) a role that is not below the inviter's.
    CannotGrant,
    /// The invitation is unknown, or not the actor's, or for another room.
    NoInvitation,
    /// The invitation expired.
    InvitationExpired,
    /// The invitation was answered or withdrawn already.
    InvitationClosed(InvitationStatus),
    /// The invitee has a pending invitation to the room already.
    PendingInvitationExists,
    /// The inviter lost the right to grant the invitation's role since inviting.
    InviterCannotGrant,
    /// Withdrawing an invitation needs its inviter or an admin.
    RevokeNotAllowed,
    /// A protected room is joined by invitation only.
    NeedsInvitation,
}

/// What a refusal is, for the client: the kind of error it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// 404: the thing (named) does not exist for the actor.
    NotFound(&'static str),
    /// 403.
    Forbidden,
    /// 409: the state does not allow it.
    Conflict,
    /// 410.
    Gone,
}

impl Refusal {
    /// The message a client sees.
    pub fn message(self) -> String {
        use Refusal as R;
        match self {
            R::NoRoom => "room not found".into(),
            R::Banned => "you are banned from this room".into(),
            R::NotMember => "you are not a member of this room".into(),
            R::NeedsRole(min) => format!("this needs the {} role or higher", min.as_str()),
            R::AlreadyMember => "you are already a member of this room".into(),
            R::TargetBanned => "that user is banned from this room".into(),
            R::TargetAlreadyMember => "that user is already a member".into(),
            R::AlreadyBanned => "that user is already banned".into(),
            R::NotBanned => "ban not found".into(),
            R::NoSuchMember => "member not found".into(),
            R::OwnerMustTransfer => {
                "the owner cannot leave; transfer ownership first (room.transfer)".into()
            }
            R::SelfBan => "you cannot ban yourself".into(),
            R::BanWeakerOnly => "you can only ban a weaker member".into(),
            R::RoleChangeNotAllowed => {
                "you can only change the role of a weaker member, to a role below yours".into()
            }
            R::OwnershipByTransfer => "the owner role changes hands only by room.transfer".into(),
            R::NotOwner => "only the owner hands over ownership".into(),
            R::AlreadyOwner => "you already own this room".into(),
            R::TransferToNonMember => {
                "ownership can only go to an active member of the room".into()
            }
            R::CannotGrant => "you can only grant a role below your own".into(),
            R::NoInvitation => "invitation not found".into(),
            R::InvitationExpired => "the invitation has expired".into(),
            R::InvitationClosed(s) => format!("the invitation is already {}", s.as_str()),
            R::PendingInvitationExists => "that user has a pending invitation already".into(),
            R::InviterCannotGrant => {
                "the inviter can no longer grant this invitation's role; ask for a new invitation"
                    .into()
            }
            R::RevokeNotAllowed => {
                "only the inviter, an admin or the owner can revoke an invitation".into()
            }
            R::NeedsInvitation => "joining a protected room needs an invitation".into(),
        }
    }

    /// The kind of error the client gets.
    pub fn kind(self) -> RefusalKind {
        use Refusal as R;
        match self {
            R::NoRoom => RefusalKind::NotFound("room"),
            R::NotBanned => RefusalKind::NotFound("ban"),
            R::NoSuchMember => RefusalKind::NotFound("member"),
            R::NoInvitation => RefusalKind::NotFound("invitation"),
            R::InvitationExpired => RefusalKind::Gone,
            R::AlreadyMember
            | R::TargetAlreadyMember
            | R::AlreadyBanned
            | R::OwnerMustTransfer
            | R::SelfBan
            | R::OwnershipByTransfer
            | R::AlreadyOwner
            | R::TransferToNonMember
            | R::InvitationClosed(_)
            | R::PendingInvitationExists => RefusalKind::Conflict,
            R::Banned
            | R::NotMember
            | R::NeedsRole(_)
            | R::TargetBanned
            | R::BanWeakerOnly
            | R::RoleChangeNotAllowed
            | R::NotOwner
            | R::CannotGrant
            | R::InviterCannotGrant
            | R::RevokeNotAllowed
            | R::NeedsInvitation => RefusalKind::Forbidden,
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

/// The role of an active member (`None`: no membership row, or banned).
pub fn active_role(m: &Option<Member>) -> Option<Role> {
    m.as_ref()
        .filter(|m| m.status == MemberStatus::Active)
        .map(|m| m.role)
}

/// A membership row's standing, if there is a row.
pub fn standing(m: &Option<Member>) -> Option<Standing> {
    m.as_ref().map(|m| Standing {
        role: m.role,
        status: m.status,
    })
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

/// Whom a membership rule is about: the actor themself (joining) or another user (inviting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Actor,
    Other,
}

/// A user with this membership row (`None`: none) may become an active member: not banned, not
/// active already.
pub fn may_become_member(status: Option<MemberStatus>, who: Subject) -> Result<(), Refusal> {
    match (status, who) {
        (None, _) => Ok(()),
        (Some(MemberStatus::Banned), Subject::Actor) => Err(Refusal::Banned),
        (Some(MemberStatus::Banned), Subject::Other) => Err(Refusal::TargetBanned),
        (Some(MemberStatus::Active), Subject::Actor) => Err(Refusal::AlreadyMember),
        (Some(MemberStatus::Active), Subject::Other) => Err(Refusal::TargetAlreadyMember),
    }
}

/// The role a user joining without an invitation gets: the one offered, capped by the role they
/// left the room with (a guest who leaves comes back a guest at most).
pub fn rejoin_role(offered: Role, cap: Option<Role>) -> Role {
    match cap {
        Some(cap) if cap.rank() < offered.rank() => cap,
        _ => offered,
    }
}

/// The role a member leaves with that caps their rejoining, if any (below `member`).
pub fn leave_cap(role: Role) -> Option<Role> {
    (role.rank() < Role::Member.rank()).then_some(role)
}

/// A member with `role` may leave: anyone but the owner, who hands the room over first.
pub fn may_leave(role: Role) -> Result<(), Refusal> {
    if role == Role::Owner {
        Err(Refusal::OwnerMustTransfer)
    } else {
        Ok(())
    }
}

/// The actor (`actor_role`) may set `target`'s role (`current`: their active role, if any) to
/// `new`: never their own, only of a weaker member, only to a role below theirs, and never to
/// or from owner (that is a transfer).
pub fn may_set_role(
    actor: &str,
    actor_role: Role,
    target: &str,
    current: Option<Role>,
    new: Role,
) -> Result<(), Refusal> {
    let current = current.ok_or(Refusal::NoSuchMember)?;
    if new == Role::Owner && actor_role == Role::Owner && target != actor {
        return Err(Refusal::OwnershipByTransfer);
    }
    if target == actor || !actor_role.outranks(current) || !actor_role.can_grant(new) {
        return Err(Refusal::RoleChangeNotAllowed);
    }
    Ok(())
}

/// The actor may hand the room (owned by `owner`) over to `to` (`to_role`: their active role):
/// only its owner, only to another active member.
pub fn may_transfer(
    actor: &str,
    actor_role: Role,
    owner: &str,
    to: &str,
    to_role: Option<Role>,
) -> Result<(), Refusal> {
    if !actor_role.can_grant(Role::Owner) || owner != actor {
        return Err(Refusal::NotOwner);
    }
    if to == actor {
        return Err(Refusal::AlreadyOwner);
    }
    to_role.map(|_| ()).ok_or(Refusal::TransferToNonMember)
}

/// The actor may ban `target` (`row`: their membership, if any): not themself, not twice, and
/// an active member only if the actor outranks them (so never the owner).
pub fn may_ban(
    actor: &str,
    actor_role: Role,
    target: &str,
    row: Option<Standing>,
) -> Result<(), Refusal> {
    if target == actor {
        return Err(Refusal::SelfBan);
    }
    match row {
        Some(Standing {
            status: MemberStatus::Banned,
            ..
        }) => Err(Refusal::AlreadyBanned),
        Some(Standing { role, .. }) if !actor_role.outranks(role) => Err(Refusal::BanWeakerOnly),
        _ => Ok(()),
    }
}

/// A ban can be lifted only where there is one.
pub fn may_unban(status: Option<MemberStatus>) -> Result<(), Refusal> {
    match status {
        Some(MemberStatus::Banned) => Ok(()),
        _ => Err(Refusal::NotBanned),
    }
}

/// The role an inviter needs in a room of `kind`: admin in a private room, member elsewhere.
pub fn inviter_min(kind: RoomKind) -> Role {
    if kind == RoomKind::Private {
        Role::Admin
    } else {
        Role::Member
    }
}

/// An inviter holding `inviter_role` (their active role in the room, if any) may grant `role`
/// by invitation in a room of `kind` — when inviting and again when it is accepted.
pub fn inviter_may_grant(
    kind: RoomKind,
    inviter_role: Option<Role>,
    role: Role,
) -> Result<(), Refusal> {
    match inviter_role {
        Some(r) if r.rank() >= inviter_min(kind).rank() && r.can_grant(role) => Ok(()),
        _ => Err(Refusal::InviterCannotGrant),
    }
}

/// The actor, with `actor_role`, may invite someone with `role` (the room's inviter minimum is
/// the write's guard).
pub fn may_grant(actor_role: Role, role: Role) -> Result<(), Refusal> {
    if actor_role.can_grant(role) {
        Ok(())
    } else {
        Err(Refusal::CannotGrant)
    }
}

/// The invitation can still be answered or withdrawn at `now`: pending and unexpired.
pub fn invitation_open(inv: &Invitation, now: i64) -> Result<(), Refusal> {
    match inv.status {
        InvitationStatus::Pending if now > inv.expires_at => Err(Refusal::InvitationExpired),
        InvitationStatus::Pending => Ok(()),
        InvitationStatus::Expired => Err(Refusal::InvitationExpired),
        other => Err(Refusal::InvitationClosed(other)),
    }
}

/// `user` may answer the invitation (accept or reject it) for `room` (`None`: any room).
pub fn invitation_for(inv: &Invitation, user: &str, room: Option<&str>) -> Result<(), Refusal> {
    if inv.invitee != user || room.is_some_and(|r| r != inv.room) {
        return Err(Refusal::NoInvitation);
    }
    Ok(())
}

/// The actor (`actor_role` in the invitation's room) may withdraw it: its inviter, or an admin.
pub fn may_revoke(actor: &str, actor_role: Role, inv: &Invitation) -> Result<(), Refusal> {
    if inv.invited_by == actor || actor_role.rank() >= Role::Admin.rank() {
        Ok(())
    } else {
        Err(Refusal::RevokeNotAllowed)
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
    fn role_changes_need_a_weaker_target_and_a_lower_role() {
        use Role::*;
        assert_eq!(may_set_role("a", Admin, "b", Some(Member), Guest), Ok(()));
        assert_eq!(
            may_set_role("a", Admin, "b", Some(Admin), Guest),
            Err(Refusal::RoleChangeNotAllowed)
        );
        assert_eq!(
            may_set_role("a", Admin, "a", Some(Admin), Member),
            Err(Refusal::RoleChangeNotAllowed)
        );
        assert_eq!(
            may_set_role("a", Admin, "b", Some(Member), Admin),
            Err(Refusal::RoleChangeNotAllowed)
        );
        assert_eq!(
            may_set_role("o", Owner, "b", Some(Admin), Owner),
            Err(Refusal::OwnershipByTransfer)
        );
        assert_eq!(
            may_set_role("o", Owner, "b", None, Member),
            Err(Refusal::NoSuchMember)
        );
    }

    #[test]
    fn bans_and_transfers() {
        use Role::*;
        let active = |role| {
            Some(Standing {
                role,
                status: MemberStatus::Active,
            })
        };
        assert_eq!(may_ban("a", Admin, "b", active(Member)), Ok(()));
        assert_eq!(may_ban("a", Admin, "b", None), Ok(()));
        assert_eq!(may_ban("a", Admin, "a", None), Err(Refusal::SelfBan));
        assert_eq!(
            may_ban("a", Admin, "o", active(Owner)),
            Err(Refusal::BanWeakerOnly)
        );
        let banned = Some(Standing {
            role: Guest,
            status: MemberStatus::Banned,
        });
        assert_eq!(
            may_ban("a", Admin, "b", banned),
            Err(Refusal::AlreadyBanned)
        );
        assert_eq!(may_transfer("o", Owner, "o", "b", Some(Member)), Ok(()));
        assert_eq!(
            may_transfer("a", Admin, "o", "b", Some(Member)),
            Err(Refusal::NotOwner)
        );
        assert_eq!(
            may_transfer("o", Owner, "o", "o", Some(Owner)),
            Err(Refusal::AlreadyOwner)
        );
        assert_eq!(
            may_transfer("o", Owner, "o", "b", None),
            Err(Refusal::TransferToNonMember)
        );
    }

    #[test]
    fn an_invitation_is_open_while_pending_and_unexpired() {
        let inv = |status| Invitation {
            id: "i".into(),
            room: "r".into(),
            invited_by: "a".into(),
            invitee: "b".into(),
            role: Role::Member,
            status,
            expires_at: 100,
            created_at: 0,
        };
        assert_eq!(
            invitation_open(&inv(InvitationStatus::Pending), 100),
            Ok(())
        );
        assert_eq!(
            invitation_open(&inv(InvitationStatus::Pending), 101),
            Err(Refusal::InvitationExpired)
        );
        assert_eq!(
            invitation_open(&inv(InvitationStatus::Accepted), 0),
            Err(Refusal::InvitationClosed(InvitationStatus::Accepted))
        );
        assert_eq!(
            invitation_for(&inv(InvitationStatus::Pending), "b", Some("r")),
            Ok(())
        );
        assert_eq!(
            invitation_for(&inv(InvitationStatus::Pending), "c", None),
            Err(Refusal::NoInvitation)
        );
        assert_eq!(
            inviter_may_grant(RoomKind::Private, Some(Role::Member), Role::Guest),
            Err(Refusal::InviterCannotGrant)
        );
        assert_eq!(
            inviter_may_grant(RoomKind::Public, Some(Role::Member), Role::Guest),
            Ok(())
        );
        assert_eq!(rejoin_role(Role::Member, Some(Role::Guest)), Role::Guest);
        assert_eq!(rejoin_role(Role::Guest, Some(Role::Member)), Role::Guest);
        assert_eq!(leave_cap(Role::Guest), Some(Role::Guest));
        assert_eq!(leave_cap(Role::Member), None);
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
