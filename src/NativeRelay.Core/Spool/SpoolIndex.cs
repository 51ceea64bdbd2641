namespace NativeRelay.Spool;

/// <summary>
/// The spool's own table of live messages: where each one's records are, so the log can be
/// truncated and compacted without asking the delivery side. A message enters when its first
/// record is about to be appended (with the tail as a floor, so truncation never overtakes it),
/// and leaves with its <see cref="StatusFlags.Done"/> status. It also keeps what a compaction
/// copy must carry: the attempt count, and the recipients' states for the rare message that is
/// partly delivered. About 40 bytes per message; a million queued messages cost ~40 MB here.
///
/// Every method takes <see cref="Gate"/>; callers that must order a log append with an index
/// change (status records, compaction copies) hold it around both.
/// </summary>
internal sealed class SpoolIndex
{
    internal struct Entry
    {
        /// <summary>The message's first record (its first chunk, or its head); the floor while it is being appended.</summary>
        public long First;
        /// <summary>The head record; -1 while the message is being appended.</summary>
        public long Head;
        public int Size;
        public ushort Attempts;
        public ushort Recipients;
        /// <summary>Standing flags a copy must carry: <see cref="StatusFlags.Held"/>, <see cref="StatusFlags.DelayWarned"/>.</summary>
        public StatusFlags Flags;

        public readonly bool Appended => Head >= 0;
    }

    public readonly object Gate = new();
    private readonly Dictionary<ulong, Entry> _entries = new();
    private readonly Dictionary<ulong, RecipientState[]> _partial = new();
    private int _capacity;
    private long _liveBytes;

    public int Count
    {
        get { lock (Gate) return _entries.Count; }
    }

    /// <summary>Approximate bytes of log the live messages need (their sizes plus envelope overhead).</summary>
    public long LiveBytes
    {
        get { lock (Gate) return _liveBytes; }
    }

    private static long Footprint(in Entry e) => e.Size + 512;

    private void Put(ulong id, Entry entry)
    {
        // Grow by a quarter rather than doubling: with a million entries, doubling would leave up
        // to half the table empty.
        if (_entries.Count >= _capacity && !_entries.ContainsKey(id))
            _capacity = _entries.EnsureCapacity(_capacity + _capacity / 4 + 64);
        if (_entries.TryGetValue(id, out var old))
            _liveBytes -= Footprint(old);
        _entries[id] = entry;
        _liveBytes += Footprint(entry);
    }

    /// <summary>A message is about to be appended; nothing at or after <paramref name="floor"/> may be truncated until it is added or removed.</summary>
    public void Reserve(ulong id, long floor)
    {
        lock (Gate)
            Put(id, new Entry { First = floor, Head = -1 });
    }

    public void Add(ulong id, long first, long head, long size, int recipients)
    {
        lock (Gate)
            Put(id, new Entry
            {
                First = first, Head = head, Size = (int)Math.Min(size, int.MaxValue),
                Recipients = (ushort)Math.Min(recipients, ushort.MaxValue),
            });
    }

    /// <summary>Recovery: a live message with its state as replayed from the log.</summary>
    public void Load(ulong id, long first, long head, long size, int recipients, int attempts, StatusFlags flags, RecipientState[]? states)
    {
        lock (Gate)
        {
            Put(id, new Entry
            {
                First = first, Head = head, Size = (int)Math.Min(size, int.MaxValue),
                Recipients = (ushort)Math.Min(recipients, ushort.MaxValue),
                Attempts = (ushort)Math.Clamp(attempts, 0, ushort.MaxValue),
                Flags = flags & Standing,
            });
            if (states is not null && Array.Exists(states, s => s != RecipientState.Pending))
                _partial[id] = (RecipientState[])states.Clone();
        }
    }

    public bool Remove(ulong id)
    {
        lock (Gate)
        {
            if (!_entries.Remove(id, out var old))
                return false;
            _liveBytes -= Footprint(old);
            _partial.Remove(id);
            return true;
        }
    }

    public bool TryGet(ulong id, out Entry entry)
    {
        lock (Gate)
            return _entries.TryGetValue(id, out entry);
    }

    /// <summary>Applies a status record (under the gate, before it is appended to the log).</summary>
    public void Apply(in StatusRecord status)
    {
        lock (Gate)
        {
            if ((status.Flags & StatusFlags.Done) != 0)
            {
                Remove(status.Id);
                return;
            }
            if (!_entries.TryGetValue(status.Id, out var entry))
                return;
            entry.Attempts = (ushort)Math.Clamp(status.Attempts, 0, ushort.MaxValue);
            entry.Flags |= status.Flags & Standing;
            if ((status.Flags & StatusFlags.Released) != 0)
                entry.Flags &= ~StatusFlags.Held;
            _entries[status.Id] = entry;
            foreach (var (index, state) in status.Changes)
            {
                if (state == RecipientState.Pending || index >= entry.Recipients)
                    continue;
                if (!_partial.TryGetValue(status.Id, out var states))
                    _partial[status.Id] = states = new RecipientState[entry.Recipients];
                states[index] = state;
            }
        }
    }

    private const StatusFlags Standing = StatusFlags.Held | StatusFlags.DelayWarned;

    /// <summary>What a copy of the message must carry: attempts, standing flags and (when some are final) the recipients' states.</summary>
    public (int Attempts, StatusFlags Flags, RecipientState[]? States) Snapshot(ulong id)
    {
        lock (Gate)
        {
            _entries.TryGetValue(id, out var entry);
            return (entry.Attempts, entry.Flags, _partial.TryGetValue(id, out var states) ? (RecipientState[])states.Clone() : null);
        }
    }

    /// <summary>Points the message at its copy, unless it finished or moved meanwhile.</summary>
    public bool Relocate(ulong id, long oldFirst, long first, long head)
    {
        lock (Gate)
        {
            if (!_entries.TryGetValue(id, out var entry) || entry.First != oldFirst)
                return false;
            entry.First = first;
            entry.Head = head;
            _entries[id] = entry;
            return true;
        }
    }

    /// <summary>The oldest log address a live message (or one being appended) still needs.</summary>
    public long OldestAddress(long fallback)
    {
        lock (Gate)
        {
            long min = fallback;
            foreach (var e in _entries.Values)
                if (e.First < min)
                    min = e.First;
            return min;
        }
    }

    /// <summary>Appended messages whose first record lies before <paramref name="address"/>, oldest first.</summary>
    public List<(ulong Id, Entry Entry)> Before(long address)
    {
        var found = new List<(ulong, Entry)>();
        lock (Gate)
        {
            foreach (var (id, e) in _entries)
                if (e.Appended && e.First < address)
                    found.Add((id, e));
        }
        found.Sort((a, b) => a.Item2.First.CompareTo(b.Item2.First));
        return found;
    }

    /// <summary>After the log was reopened at <paramref name="address"/>: messages whose records were not committed are gone.</summary>
    public int RemoveFrom(long address)
    {
        lock (Gate)
        {
            var lost = new List<ulong>();
            foreach (var (id, e) in _entries)
                if (e.First >= address || e.Head >= address)
                    lost.Add(id);
            foreach (var id in lost)
                Remove(id);
            return lost.Count;
        }
    }
}
