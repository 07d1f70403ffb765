"""The access policy as one table: every role, every decision, on its own course and
student and on others'. Each cell is read from usecases/access.py alone (no database), so
a change of a rule shows here as the one cell it changes."""

from __future__ import annotations

import pytest

from db.models import Role
from services.keys import Principal
from usecases import access

WHO = {
    Role.ADMIN: Principal("k-admin", Role.ADMIN, None, None, "s"),
    Role.INSTRUCTOR: Principal("k-instructor", Role.INSTRUCTOR, "c1", None, "s"),
    Role.LMS: Principal("k-lms", Role.LMS, "c1", None, "s"),
    Role.STUDENT: Principal("k-student", Role.STUDENT, "c1", "ann", "s"),
}
# The caller's own course is c1 and (a student) its own student ann; c2 is another course,
# bob another student, None the shared task bank.
TASK_COURSES = {"shared": None, "own course": "c1", "other course": "c2"}
SUBMISSIONS = {  # (course, student)
    "own course, own student": ("c1", "ann"),
    "own course, other student": ("c1", "bob"),
    "other course, own student id": ("c2", "ann"),
}
STUDENTS = {"as ann": "ann", "as bob": "bob"}

DECISIONS = {
    "see task": (lambda who, t: access.may_see_task(who, t), TASK_COURSES),
    "act as staff": (lambda who, _: bool(access.may_act_as_staff(who)), {"-": None}),
    "manage task": (lambda who, t: bool(access.may_manage_task(who, t)), TASK_COURSES),
    "submit": (lambda who, s: bool(access.may_submit(who, s)), STUDENTS),
    "read submission": (lambda who, s: access.may_read(who, *s), SUBMISSIONS),
    "regrade": (lambda who, s: bool(access.may_regrade(who, s[0])), SUBMISSIONS),
    "post spec to (named course)": (
        lambda who, named: access.spec_course(who, named),
        {"none named": None, "c1 named": "c1", "c2 named": "c2"},
    ),
    "act in (named course)": (
        lambda who, named: access.acting_course(who, named),
        {"none named": None, "c1 named": "c1", "c2 named": "c2"},
    ),
}

Y, N = True, False
# role order: admin, instructor (c1), lms (c1), student (c1, ann); one tuple per target
EXPECTED = {
    "see task": {
        Role.ADMIN: (Y, Y, Y),
        Role.INSTRUCTOR: (Y, Y, N),
        Role.LMS: (Y, Y, N),
        Role.STUDENT: (Y, Y, N),
    },
    "act as staff": {Role.ADMIN: (Y,), Role.INSTRUCTOR: (Y,), Role.LMS: (N,), Role.STUDENT: (N,)},
    "manage task": {
        Role.ADMIN: (Y, Y, Y),
        Role.INSTRUCTOR: (N, Y, N),
        Role.LMS: (N, N, N),
        Role.STUDENT: (N, N, N),
    },
    "submit": {
        Role.ADMIN: (Y, Y),
        Role.INSTRUCTOR: (N, N),
        Role.LMS: (Y, Y),
        Role.STUDENT: (Y, N),
    },
    "read submission": {
        Role.ADMIN: (Y, Y, Y),
        Role.INSTRUCTOR: (Y, Y, N),
        Role.LMS: (Y, Y, N),
        Role.STUDENT: (Y, N, N),
    },
    "regrade": {
        Role.ADMIN: (Y, Y, Y),
        Role.INSTRUCTOR: (Y, Y, N),
        Role.LMS: (N, N, N),
        Role.STUDENT: (N, N, N),
    },
    # who may post at all is "act as staff"; this is where an allowed post goes
    "post spec to (named course)": {
        Role.ADMIN: (None, "c1", "c2"),
        Role.INSTRUCTOR: ("c1", "c1", "c1"),
        Role.LMS: ("c1", "c1", "c1"),
        Role.STUDENT: ("c1", "c1", "c1"),
    },
    "act in (named course)": {
        Role.ADMIN: (None, "c1", "c2"),
        Role.INSTRUCTOR: ("c1", "c1", "c1"),
        Role.LMS: ("c1", "c1", "c1"),
        Role.STUDENT: ("c1", "c1", "c1"),
    },
}
MATRIX = [
    (decision, role, target, expected)
    for decision, by_role in EXPECTED.items()
    for role, cells in by_role.items()
    for target, expected in zip(DECISIONS[decision][1], cells, strict=True)
]


def test_the_table_covers_every_role_and_decision():
    assert set(EXPECTED) == set(DECISIONS)
    for decision, by_role in EXPECTED.items():
        assert set(by_role) == set(Role), decision
        assert all(len(c) == len(DECISIONS[decision][1]) for c in by_role.values()), decision


@pytest.mark.parametrize(("decision", "role", "target", "expected"), MATRIX)
def test_access_matrix(decision, role, target, expected):
    decide, targets = DECISIONS[decision]
    assert decide(WHO[role], targets[target]) == expected


def test_refusals_say_why():
    student, instructor, lms = WHO[Role.STUDENT], WHO[Role.INSTRUCTOR], WHO[Role.LMS]
    assert access.may_submit(student, "bob").reason == "a student may only submit as themselves"
    assert "use an lms or student key" in access.may_submit(instructor, "ann").reason
    assert access.may_act_as_staff(lms).reason == (
        "this needs one of the roles admin, instructor; your key is lms"
    )
    assert access.may_manage_task(instructor, "c2").reason == (
        "only an instructor of this course or an admin may do this"
    )
    assert access.may_submit(lms, "bob").reason == ""


@pytest.mark.parametrize("role", list(Role))
def test_a_list_selects_exactly_what_may_be_read(role):
    """`readable` (the list's filter) admits a submission exactly when `may_read` does."""
    scope = access.readable(WHO[role])
    for course, student in [*SUBMISSIONS.values(), (None, "ann"), ("c1", "carol")]:
        assert scope.admits(course, student) == access.may_read(WHO[role], course, student)
    assert scope.student_id == ("ann" if role == Role.STUDENT else None)
    assert scope.every_course == (role == Role.ADMIN)


def test_roles_and_statuses_are_the_stored_strings():
    from db.models import DeliveryStatus, SubmissionStatus, VersionStatus

    assert [str(r) for r in Role] == ["admin", "instructor", "lms", "student"]
    assert list(SubmissionStatus) == ["queued", "running", "completed"]
    assert list(VersionStatus) == ["validating", "ready", "invalid"]
    assert list(DeliveryStatus) == ["pending", "delivered", "failed"]
