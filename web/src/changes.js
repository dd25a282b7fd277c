// Which of two copies of a message is the newer as far as its edits go, for
// copies that cross on their way (a history page read while an edit's event
// was in flight, one's own edit answered after another device's). Pure: the
// store (store.js) keeps the newer.

// True when `m` is not older than `old`: by the store's change numbers
// (`change_no`, one sequence across every node), else, from a server without
// them, by `edited_at`, the clock of the node that made the edit. A deleted
// copy is newer than any edit.
export function newerEdit(old, m) {
  if (old.deleted) return false;
  if (Number.isSafeInteger(old.change_no) && Number.isSafeInteger(m.change_no)) return m.change_no >= old.change_no;
  return !(old.edited_at && m.edited_at && Date.parse(old.edited_at) > Date.parse(m.edited_at));
}
