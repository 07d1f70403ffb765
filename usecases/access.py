"""Who may do what: every access decision the use cases make, one function each.

A caller is a `Principal` (services/keys.py): a role and, but for an admin, one course
(and, for a student, one student id). An admin acts on every course; an instructor
manages their course's tasks and reads its submissions; an LMS submits and reads for any
student of its course; a student submits and reads as themselves. The shared task bank
(course None) is visible to every caller and managed by admins only. Roles, like the
statuses, are typed values stored as strings (db/models.py).

What a caller may not see is answered as missing (the use cases raise `NotFound`), so
that nobody learns what exists in another course; what they see but may not do is
refused with the decision's reason (`Forbidden`).
"""

from __future__ import annotations

from dataclasses import dataclass

from db.models import Role
from services.errors import Forbidden
from services.keys import Principal

STAFF = (Role.ADMIN, Role.INSTRUCTOR)


@dataclass(frozen=True)
class Decision:
    """Allowed, or refused with a reason that says why (shown to the caller)."""

    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


def require(decision: Decision) -> None:
    if not decision:
        raise Forbidden(decision.reason)


def sees_every_course(who: Principal) -> bool:
    return who.role == Role.ADMIN


def acting_course(who: Principal, named: str | None) -> str | None:
    """The course a caller acts in: its key's; an admin's, the one it names (None: the
    shared bank)."""
    return named if sees_every_course(who) else who.course


# --- tasks ---------------------------------------------------------------------------


def may_see_task(who: Principal, course: str | None) -> bool:
    """A task of `course` (None: the shared bank)."""
    return sees_every_course(who) or course is None or course == who.course


def may_act_as_staff(who: Principal) -> Decision:
    """Staff's work at all: post specs, read versions, archive, regrade (on which task:
    `may_manage_task`)."""
    if who.role in STAFF:
        return ALLOWED
    return Decision(
        False, f"this needs one of the roles {', '.join(STAFF)}; your key is {who.role}"
    )


def spec_course(who: Principal, named: str | None) -> str | None:
    """The course a posted spec's task belongs to: an instructor's own; an admin's, the
    one it names, else the shared bank (None)."""
    return acting_course(who, named) or None


def may_manage_task(who: Principal, course: str | None) -> Decision:
    """Read a task's versions and reports, archive it, regrade its submissions."""
    if who.role == Role.ADMIN or (who.role == Role.INSTRUCTOR and course == who.course):
        return ALLOWED
    return Decision(False, "only an instructor of this course or an admin may do this")


# --- submissions ---------------------------------------------------------------------


def may_submit(who: Principal, student_id: str) -> Decision:
    """Submit an answer as the student `student_id` (to a task `may_see_task` finds)."""
    if who.role == Role.STUDENT and student_id != who.student_id:
        return Decision(False, "a student may only submit as themselves")
    if who.role == Role.INSTRUCTOR:
        return Decision(False, "instructors do not submit answers; use an lms or student key")
    return ALLOWED


@dataclass(frozen=True)
class Readable:
    """The submissions a caller may read, as a query selects them."""

    every_course: bool
    course: str | None  # when not every course: only this course's
    student_id: str | None  # only this student's; None: every student's

    def admits(self, course: str | None, student_id: str) -> bool:
        return (self.every_course or course == self.course) and (
            self.student_id is None or student_id == self.student_id
        )


def readable(who: Principal) -> Readable:
    """Everything for an admin, a course's submissions for its staff and LMS, a student's
    own (in their course) for a student."""
    return Readable(
        every_course=sees_every_course(who),
        course=who.course,
        student_id=who.student_id if who.role == Role.STUDENT else None,
    )


def may_read(who: Principal, course: str | None, student_id: str) -> bool:
    """A submission of `student_id` in `course`: its status, result and webhook deliveries."""
    return readable(who).admits(course, student_id)


def may_regrade(who: Principal, course: str | None) -> Decision:
    """Grade a submission of `course` again (one the caller `may_read`)."""
    return may_manage_task(who, course)


# --- learners in the pages -----------------------------------------------------------


def may_make_link(who: Principal) -> Decision:
    """Make a learner's link into the pages: an LMS, for a student of its course (the
    session the link starts acts as that student, through the LMS's key)."""
    if who.role == Role.LMS:
        return ALLOWED
    return Decision(False, f"only an lms key makes learner links; your key is {who.role}")


def learner(key_id: str, course: str, student_id: str) -> Principal:
    """Who a learner's session acts as: the student, in the course of the key that made its
    link (submissions record that key), with what a student key may do."""
    return Principal(key_id, Role.STUDENT, course, student_id, webhook_secret="")


# --- the instructor's desk in the pages ----------------------------------------------


def may_use_desk(who: Principal) -> Decision:
    """Sign in to the desk (/teach) with the key, and act there as it: a course's
    instructor, whose desk shows that course alone (an admin, of every course, works
    through the API). A learner's session, a student's or an LMS's key never reach it."""
    if who.role == Role.INSTRUCTOR and who.course:
        return ALLOWED
    return Decision(
        False,
        f"the desk is for a course's instructors: sign in with an instructor key, not {who.role}",
    )
