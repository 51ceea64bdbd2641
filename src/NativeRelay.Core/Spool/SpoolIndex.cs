namespace NativeRelay.Spool;

/// <summary>
/// The spool's own table of live messages: where each one's records are, so the log can be
/// truncated and compacted without asking the delivery side. A message enters when its first
/// record is about to be appended (with the tail as a floor, so truncation never overtakes it),
/// and leaves with its <see cref="StatusFlags.Done"/> status. It also keeps what a compaction
/// copy must carry: the attempt count, and the recipients' states for the rare message that is
/// partly delivered. It is also where a message waiting for its retry lives (the delivery side
/// keeps an object only for the few messages being attempted, see DeliveryScheduler): its due
/// time in seconds and ids of its last error and last destination in a bounded, reference-counted
/// text table. A packed 32-byte slot per message in a dictionary that grows by a quarter: about
/// 55-65 bytes per message, ~60 MB for a million queued messages.
///
/// Every method takes <see cref="Gate"/>; callers that must order a log append with an index
/// change (status records, compaction copies) hold it around both.
/// </summary>
internal sealed class SpoolIndex
{
    /// <summary>One message as the index reports it.</summary>
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

    /// <summary>
    /// How an entry is stored (24 bytes): the head address, how far back the first record is (in
    /// 4-byte units: records are 4-aligned), and the rest. A message being appended has its floor
    /// in <see cref="Head"/> and <see cref="Reserved"/> set. A first record too far back for 32
    /// bits (never seen in practice) has its address in <see cref="_far"/>.
    /// </summary>
    private struct Slot
    {
        public long Head;
        public uint Back;
        public int Size;
        public ushort Attempts;
        public ushort Recipients;
        public byte Flags;
        // The delivery side's cold state: when the next attempt is due (Unix seconds, 0: not
        // waiting in the retry heap), and text ids of the last error and destination.
        public ushort Error;
        public ushort Destination;
        public uint Due;
    }

    private const byte Reserved = 0x80;
    /// <summary>Appended by a session (or the bouncer) and not yet taken by the delivery side.</summary>
    private const byte Intake = 0x40;
    private const uint Far = uint.MaxValue;

    public readonly object Gate = new();
    private readonly Dictionary<ulong, Slot> _entries = new();
    private readonly Dictionary<ulong, long> _far = new();
    private readonly Dictionary<ulong, RecipientState[]> _partial = new();
    private readonly TextTable _texts = new();
    private int _capacity;
    private long _liveBytes;
    // Kept with every change of a slot's flags, so the metrics can count the queue by state
    // without walking a million slots under the gate.
    private int _held;
    private int _notTaken; // being appended, or appended and not yet taken by the delivery side

    private void Tally(byte flags, int sign)
    {
        if ((flags & (Reserved | Intake)) != 0)
            _notTaken += sign;
        else if ((flags & (byte)StatusFlags.Held) != 0)
            _held += sign;
    }

    /// <summary>Messages the delivery side has taken, and how many of them are held (cheap: for the metrics endpoint).</summary>
    public (int Taken, int Held) StateCounts()
    {
        lock (Gate)
            return (_entries.Count - _notTaken, _held);
    }

    public int Count
    {
        get { lock (Gate) return _entries.Count; }
    }

    /// <summary>Approximate bytes of log the live messages need (their sizes plus envelope overhead).</summary>
    public long LiveBytes
    {
        get { lock (Gate) return _liveBytes; }
    }

    private static long Footprint(int size) => size + 512;

    private Entry View(ulong id, in Slot slot)
    {
        bool reserved = (slot.Flags & Reserved) != 0;
        return new Entry
        {
            First = slot.Back == Far ? _far[id] : slot.Head - 4L * slot.Back,
            Head = reserved ? -1 : slot.Head,
            Size = slot.Size,
            Attempts = slot.Attempts,
            Recipients = slot.Recipients,
            Flags = (StatusFlags)(slot.Flags & ~(Reserved | Intake)),
        };
    }

    private long FirstOf(ulong id, in Slot slot) => slot.Back == Far ? _far[id] : slot.Head - 4L * slot.Back;

    private void Put(ulong id, in Entry entry, bool intake = false)
    {
        // Grow by a quarter rather than doubling: with a million entries, doubling would leave up
        // to half the table empty.
        if (_entries.Count >= _capacity && !_entries.ContainsKey(id))
            _capacity = _entries.EnsureCapacity(_capacity + _capacity / 4 + 64);
        bool existed = _entries.TryGetValue(id, out var old);
        if (existed)
        {
            _liveBytes -= Footprint(old.Size);
            Tally(old.Flags, -1);
        }
        bool reserved = entry.Head < 0;
        long head = reserved ? entry.First : entry.Head;
        long back = head - entry.First;
        var slot = new Slot
        {
            Head = head,
            Back = back >= 0 && back % 4 == 0 && back / 4 < Far ? (uint)(back / 4) : Far,
            Size = entry.Size,
            Attempts = entry.Attempts,
            Recipients = entry.Recipients,
            Flags = (byte)((byte)entry.Flags | (reserved ? Reserved : 0) | (intake || (old.Flags & Intake) != 0 ? Intake : 0)),
            // A new record, a relocation or a status keeps the delivery side's cold state.
            Error = old.Error,
            Destination = old.Destination,
            Due = old.Due,
        };
        if (slot.Back == Far)
            _far[id] = entry.First;
        else
            _far.Remove(id);
        _entries[id] = slot;
        Tally(slot.Flags, +1);
        _liveBytes += Footprint(entry.Size);
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
            }, intake: true);
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
            Tally(old.Flags, -1);
            _liveBytes -= Footprint(old.Size);
            _texts.Release(old.Error);
            _texts.Release(old.Destination);
            _partial.Remove(id);
            _far.Remove(id);
            return true;
        }
    }

    public bool TryGet(ulong id, out Entry entry)
    {
        lock (Gate)
        {
            if (_entries.TryGetValue(id, out var slot))
            {
                entry = View(id, slot);
                return true;
            }
            entry = default;
            return false;
        }
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
            if (!_entries.TryGetValue(status.Id, out var slot))
                return;
            var entry = View(status.Id, slot);
            entry.Attempts = (ushort)Math.Clamp(status.Attempts, 0, ushort.MaxValue);
            entry.Flags |= status.Flags & Standing;
            if ((status.Flags & StatusFlags.Released) != 0)
                entry.Flags &= ~StatusFlags.Held;
            Put(status.Id, entry);
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
            var entry = _entries.TryGetValue(id, out var slot) ? View(id, slot) : default;
            return (entry.Attempts, entry.Flags, _partial.TryGetValue(id, out var states) ? (RecipientState[])states.Clone() : null);
        }
    }

    /// <summary>Points the message at its copy, unless it finished or moved meanwhile.</summary>
    public bool Relocate(ulong id, long oldFirst, long first, long head)
    {
        lock (Gate)
        {
            if (!_entries.TryGetValue(id, out var slot))
                return false;
            var entry = View(id, slot);
            if (entry.First != oldFirst)
                return false;
            entry.First = first;
            entry.Head = head;
            Put(id, entry);
            return true;
        }
    }

    /// <summary>The oldest log address a live message (or one being appended) still needs.</summary>
    public long OldestAddress(long fallback)
    {
        lock (Gate)
        {
            long min = fallback;
            foreach (var (id, slot) in _entries)
            {
                long first = FirstOf(id, slot);
                if (first < min)
                    min = first;
            }
            return min;
        }
    }

    /// <summary>Appended messages whose first record lies before <paramref name="address"/>, oldest first.</summary>
    public List<(ulong Id, Entry Entry)> Before(long address)
    {
        var found = new List<(ulong, Entry)>();
        lock (Gate)
        {
            foreach (var (id, slot) in _entries)
                if ((slot.Flags & Reserved) == 0 && FirstOf(id, slot) < address)
                    found.Add((id, View(id, slot)));
        }
        found.Sort((a, b) => a.Item2.First.CompareTo(b.Item2.First));
        return found;
    }

    // ---- The delivery side's cold state ------------------------------------------------------

    /// <summary>A live message as the delivery side sees it while no attempt is in progress.</summary>
    internal struct Cold
    {
        public long First;
        public long Head;
        public int Size;
        public int Attempts;
        public int Recipients;
        public bool Held;
        public bool DelayWarned;
        /// <summary>Unix seconds of the next attempt; 0: not waiting in the retry heap (held, or being attempted).</summary>
        public uint Due;
        public string? LastError;
        public string? LastDestination;
    }

    private Cold ColdView(ulong id, in Slot slot) => new()
    {
        First = FirstOf(id, slot),
        Head = slot.Head,
        Size = slot.Size,
        Attempts = slot.Attempts,
        Recipients = slot.Recipients,
        Held = (slot.Flags & (byte)StatusFlags.Held) != 0,
        DelayWarned = (slot.Flags & (byte)StatusFlags.DelayWarned) != 0,
        Due = slot.Due,
        LastError = _texts.Get(slot.Error),
        LastDestination = _texts.Get(slot.Destination),
    };

    /// <summary>The delivery side takes a message a session (or the bouncer) appended. False: it is not in the index.</summary>
    public bool TakeIntake(ulong id)
    {
        lock (Gate)
        {
            ref var slot = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_entries, id);
            if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref slot))
                return false;
            Tally(slot.Flags, -1);
            slot.Flags &= unchecked((byte)~Intake);
            Tally(slot.Flags, +1);
            return true;
        }
    }

    /// <summary>
    /// Takes a message out of the cold state for an attempt (or an admin command): false if it is
    /// gone, still being appended or taken in, or (for an attempt) held or no longer due at
    /// <paramref name="due"/> (a stale retry heap entry). An attempt clears its due time.
    /// </summary>
    public bool TryWarm(ulong id, bool attempt, uint due, out Cold cold, out RecipientState[]? states)
    {
        lock (Gate)
        {
            ref var slot = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_entries, id);
            cold = default;
            states = null;
            if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref slot) || (slot.Flags & (Reserved | Intake)) != 0)
                return false;
            if (attempt && (slot.Due != due || (slot.Flags & (byte)StatusFlags.Held) != 0))
                return false;
            if (attempt)
                slot.Due = 0;
            cold = ColdView(id, slot);
            if (_partial.TryGetValue(id, out var partial))
                states = (RecipientState[])partial.Clone();
            return true;
        }
    }

    /// <summary>Puts a message back in the cold state: its next attempt (0: none) and what the last one said.</summary>
    public bool Cool(ulong id, uint due, string? lastError, string? lastDestination)
    {
        lock (Gate)
        {
            ref var slot = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_entries, id);
            if (System.Runtime.CompilerServices.Unsafe.IsNullRef(ref slot))
                return false;
            slot.Due = due;
            ushort error = _texts.Intern(lastError), destination = _texts.Intern(lastDestination);
            _texts.Release(slot.Error);
            _texts.Release(slot.Destination);
            slot.Error = error;
            slot.Destination = destination;
            return true;
        }
    }

    /// <summary>The cold view of one message (false: not in the index, or not taken by the delivery side yet).</summary>
    public bool TryGetCold(ulong id, out Cold cold)
    {
        lock (Gate)
        {
            if (_entries.TryGetValue(id, out var slot) && (slot.Flags & (Reserved | Intake)) == 0)
            {
                cold = ColdView(id, slot);
                return true;
            }
            cold = default;
            return false;
        }
    }

    /// <summary>Visits every message the delivery side has taken (under the gate: keep the visitor short, take no other lock).</summary>
    public void ForEachCold(Action<ulong, Cold> visit)
    {
        lock (Gate)
        {
            foreach (var (id, slot) in _entries)
                if ((slot.Flags & (Reserved | Intake)) == 0)
                    visit(id, ColdView(id, slot));
        }
    }

    /// <summary>The ids of every message the delivery side has taken, in id (arrival) order.</summary>
    public List<ulong> ColdIds()
    {
        var ids = new List<ulong>();
        lock (Gate)
        {
            foreach (var (id, slot) in _entries)
                if ((slot.Flags & (Reserved | Intake)) == 0)
                    ids.Add(id);
        }
        ids.Sort();
        return ids;
    }

    /// <summary>Whether a retry heap entry still matches the message's slot (for the heap's compaction).</summary>
    public bool IsDue(ulong id, uint due)
    {
        lock (Gate)
            return _entries.TryGetValue(id, out var slot) && slot.Due == due && (slot.Flags & (byte)StatusFlags.Held) == 0;
    }

    /// <summary>Distinct texts (last errors, destinations) in the table, for tests and figures.</summary>
    public int TextCount
    {
        get { lock (Gate) return _texts.Count; }
    }

    /// <summary>After the log was reopened at <paramref name="address"/>: messages whose records were not committed are gone.</summary>
    public int RemoveFrom(long address)
    {
        lock (Gate)
        {
            var lost = new List<ulong>();
            foreach (var (id, slot) in _entries)
                if (FirstOf(id, slot) >= address || slot.Head >= address)
                    lost.Add(id);
            foreach (var id in lost)
                Remove(id);
            return lost.Count;
        }
    }
}

/// <summary>
/// Texts many queued messages share (a destination that is down gives a million deferred messages
/// one error), by a 16-bit id with a reference count, so a message's slot holds 2 bytes instead of
/// a reference and an id is reused once no message refers to it. Bounded: past 65,534 distinct
/// texts in use, new ones map to one fixed text (the delivery log keeps every reply). Not locked:
/// the index calls it under its gate.
/// </summary>
internal sealed class TextTable
{
    private const int Overflow = ushort.MaxValue;
    private const string OverflowText = "(not kept: too many distinct errors queued; see the delivery log)";
    private string?[] _texts = new string?[64];
    private int[] _references = new int[64];
    private readonly Dictionary<string, ushort> _ids = new(StringComparer.Ordinal);
    private readonly Stack<ushort> _free = new();
    private int _next = 1;

    public int Count => _ids.Count;

    public string? Get(ushort id) => id == 0 ? null : id == Overflow ? OverflowText : _texts[id];

    public ushort Intern(string? text)
    {
        if (text is null)
            return 0;
        if (_ids.TryGetValue(text, out ushort id))
        {
            _references[id]++;
            return id;
        }
        if (_free.TryPop(out id))
        {
        }
        else if (_next < Overflow)
        {
            id = (ushort)_next++;
            if (id >= _texts.Length)
            {
                Array.Resize(ref _texts, Math.Min(_texts.Length * 2, Overflow));
                Array.Resize(ref _references, _texts.Length);
            }
        }
        else
        {
            return Overflow;
        }
        _texts[id] = text;
        _references[id] = 1;
        _ids[text] = id;
        return id;
    }

    public void Release(ushort id)
    {
        if (id == 0 || id == Overflow || --_references[id] > 0)
            return;
        _ids.Remove(_texts[id]!);
        _texts[id] = null;
        _free.Push(id);
    }
}
