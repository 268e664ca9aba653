// An append-mostly list of records kept sorted and unique by a numeric key (event sequence, metric id).
// Deltas, the initial history and a reconnect's "missing" reply can arrive in any order and overlap:
// merging by key makes the result the same whatever the order.

export class KeyedLog {
  constructor(key) {
    this.key = key;
    this.items = [];
    this.keys = new Set();
  }

  get size() {
    return this.items.length;
  }

  get firstKey() {
    return this.items.length ? this.items[0][this.key] : 0;
  }

  get lastKey() {
    return this.items.length ? this.items[this.items.length - 1][this.key] : 0;
  }

  /** Add records; returns how many were new. Appending in order costs O(new), anything else a sort. */
  add(records) {
    let added = 0;
    let sorted = true;
    for (const record of records || []) {
      const k = record[this.key];
      if (typeof k !== "number" || this.keys.has(k)) continue;
      if (this.items.length && k < this.lastKey) sorted = false;
      this.keys.add(k);
      this.items.push(record);
      added += 1;
    }
    if (!sorted) this.items.sort((a, b) => a[this.key] - b[this.key]);
    return added;
  }

  clear() {
    this.items = [];
    this.keys.clear();
  }
}
