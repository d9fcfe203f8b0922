package tokenstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/apitoken/caddy-apitoken/event"
	"github.com/apitoken/caddy-apitoken/policy"
	"github.com/apitoken/caddy-apitoken/storage"
)

// SQL for group_members.
const (
	selectMember = `SELECT group_name, user, added_at FROM group_members WHERE group_name = ? AND user_key = ?`

	selectMembers = `SELECT group_name, user, added_at FROM group_members WHERE group_name = ? ORDER BY user_key`

	selectGroups = `SELECT group_name, COUNT(*) FROM group_members GROUP BY group_name ORDER BY group_name`

	selectMemberships = `SELECT user_key, group_name FROM group_members ORDER BY user_key, group_name`

	insertMember = `INSERT INTO group_members (group_name, user_key, user, added_at) VALUES (?, ?, ?, ?)`

	deleteMember = `DELETE FROM group_members WHERE group_name = ? AND user_key = ? RETURNING user`
)

// AddMember puts user in group and reports whether it was added: false if
// the user, compared case-insensitively, already was a member, in which case
// the stored Member, with the spelling first given, is returned. The group
// name must pass policy.ValidGroupName and the user the rules of Create
// (ErrInvalid otherwise). A group exists while it has members. GroupsOf
// reflects the change when AddMember returns.
//
// If ev is not nil and the user was added, ev is stored in the audit trail
// in the same transaction, with Time (if zero, the time added), User (as
// given) and Group filled in; if that fails, the user is not added. Once
// added, *ev is the event as stored, ID included. If the user already was a
// member, nothing changed: no event is stored and ev keeps ID 0.
func (s *Store) AddMember(ctx context.Context, group, user string, ev *event.Event) (_ storage.Member, _ bool, err error) {
	defer classify(&err)
	if err := validateMember(group, user); err != nil {
		return storage.Member{}, false, fmt.Errorf("adding member to group: %w", err)
	}
	key := userKey(user)
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return storage.Member{}, false, fmt.Errorf("adding %q to group %s: %w", user, group, err)
	}
	defer tx.Rollback()
	m, found, err := findMember(ctx, tx, group, key)
	if err != nil {
		return storage.Member{}, false, fmt.Errorf("adding %q to group %s: %w", user, group, err)
	}
	var stored event.Event
	if !found {
		m = storage.Member{Group: group, User: user, AddedAt: millis(s.now())}
		if err := insertMemberRow(ctx, tx, m); err != nil {
			return storage.Member{}, false, fmt.Errorf("adding %q to group %s: %w", user, group, err)
		}
		if stored, err = insertChange(ctx, tx, ev, memberEvent(ev, m), m.AddedAt); err != nil {
			return storage.Member{}, false, fmt.Errorf("adding %q to group %s: %w", user, group, err)
		}
	}
	if err := s.members.Commit(tx.Commit, key, group, true); err != nil {
		return storage.Member{}, false, fmt.Errorf("adding %q to group %s: %w", user, group, err)
	}
	if !found {
		changeDone(ev, stored)
	}
	return m, !found, nil
}

// RemoveMember takes user, compared case-insensitively, out of group and
// reports whether it was a member. GroupsOf reflects the change when
// RemoveMember returns. If ev is not nil and the user was removed, ev is
// stored with the change as AddMember does, User being the spelling the
// membership was stored with; if the user was no member, no event is
// stored and ev keeps ID 0.
func (s *Store) RemoveMember(ctx context.Context, group, user string, ev *event.Event) (_ bool, err error) {
	defer classify(&err)
	if err := validateMember(group, user); err != nil {
		return false, fmt.Errorf("removing member from group: %w", err)
	}
	key := userKey(user)
	tx, err := s.beginWrite(ctx)
	if err != nil {
		return false, fmt.Errorf("removing %q from group %s: %w", user, group, err)
	}
	defer tx.Rollback()
	m, removed, err := deleteMemberRow(ctx, tx, group, key)
	if err != nil {
		return false, fmt.Errorf("removing %q from group %s: %w", user, group, err)
	}
	var stored event.Event
	if removed {
		if stored, err = insertChange(ctx, tx, ev, memberEvent(ev, m), s.now()); err != nil {
			return false, fmt.Errorf("removing %q from group %s: %w", user, group, err)
		}
	}
	if err := s.members.Commit(tx.Commit, key, group, false); err != nil {
		return false, fmt.Errorf("removing %q from group %s: %w", user, group, err)
	}
	if removed {
		changeDone(ev, stored)
	}
	return removed, nil
}

// Members returns the members of group sorted by user, ignoring case. The
// slice is empty, never nil, for a group without members.
func (s *Store) Members(ctx context.Context, group string) (_ []storage.Member, err error) {
	defer classify(&err)
	if err := policy.ValidGroupName(group); err != nil {
		return nil, fmt.Errorf("listing group members: %w: %w", ErrInvalid, err)
	}
	tx, err := s.reader.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("listing members of group %s: %w", group, err)
	}
	defer tx.Rollback()
	ms, err := queryMembers(ctx, tx, group)
	if err != nil {
		return nil, fmt.Errorf("listing members of group %s: %w", group, err)
	}
	return ms, nil
}

// Groups returns the groups that have members, sorted by name. The slice is
// never nil.
func (s *Store) Groups(ctx context.Context) (_ []storage.GroupInfo, err error) {
	defer classify(&err)
	tx, err := s.reader.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("listing groups: %w", err)
	}
	defer tx.Rollback()
	gs, err := queryGroups(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("listing groups: %w", err)
	}
	return gs, nil
}

// GroupsOf returns the sorted names of the groups whose member is the user
// with the given key (strings.ToLower(user), as storage.Entry.UserKey), or nil. It
// answers from memory, without allocating: the slice is shared, and callers
// must not modify it. Changes made through this Store apply when their
// method returns; changes made by other processes, once the poller has seen
// them.
func (s *Store) GroupsOf(userKey string) []string {
	return s.members.GroupsOf(userKey)
}

func validateMember(group, user string) error {
	if err := policy.ValidGroupName(group); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return validateUser(user)
}

// findMember returns the membership of the user with key in group, if any.
func findMember(ctx context.Context, q queryer, group, key string) (storage.Member, bool, error) {
	m, err := scanMember(q.QueryRowContext(ctx, selectMember, group, key))
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Member{}, false, nil
	}
	if err != nil {
		return storage.Member{}, false, err
	}
	return m, true, nil
}

func insertMemberRow(ctx context.Context, tx *sql.Tx, m storage.Member) error {
	_, err := tx.ExecContext(ctx, insertMember, m.Group, userKey(m.User), m.User, m.AddedAt.UnixMilli())
	return err
}

// deleteMemberRow deletes a membership and reports whether there was one,
// and if so, which (AddedAt is left zero).
func deleteMemberRow(ctx context.Context, tx *sql.Tx, group, key string) (storage.Member, bool, error) {
	m := storage.Member{Group: group}
	err := tx.QueryRowContext(ctx, deleteMember, group, key).Scan(&m.User)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Member{}, false, nil
	}
	if err != nil {
		return storage.Member{}, false, err
	}
	return m, true, nil
}

func queryMembers(ctx context.Context, q queryer, group string) ([]storage.Member, error) {
	rows, err := q.QueryContext(ctx, selectMembers, group)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ms := []storage.Member{}
	for rows.Next() {
		m, err := scanMember(rows)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

func queryGroups(ctx context.Context, q queryer) ([]storage.GroupInfo, error) {
	rows, err := q.QueryContext(ctx, selectGroups)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	gs := []storage.GroupInfo{}
	for rows.Next() {
		var g storage.GroupInfo
		if err := rows.Scan(&g.Name, &g.Members); err != nil {
			return nil, err
		}
		gs = append(gs, g)
	}
	return gs, rows.Err()
}

// loadMemberships reads the whole group_members table into the form the
// membership index keeps.
func loadMemberships(ctx context.Context, q queryer) (map[string][]string, error) {
	rows, err := q.QueryContext(ctx, selectMemberships)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := make(map[string][]string)
	for rows.Next() {
		var key, group string
		if err := rows.Scan(&key, &group); err != nil {
			return nil, err
		}
		m[key] = append(m[key], group) // sorted by the query
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for key, groups := range m {
		m[key] = slices.Clip(groups) // an append by a reader copies
	}
	return m, nil
}

func scanMember(row interface{ Scan(...any) error }) (storage.Member, error) {
	var m storage.Member
	var added int64
	if err := row.Scan(&m.Group, &m.User, &added); err != nil {
		return storage.Member{}, err
	}
	m.AddedAt = fromMillis(added)
	return m, nil
}
