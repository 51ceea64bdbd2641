namespace NativeRelay.Delivery;

/// <summary>
/// The retry heap: cold messages waiting for their next attempt, ordered by due time (Unix
/// seconds), then by id (arrival order), 16 bytes an entry and no object per message. Any thread
/// may schedule (a round ends on the loop of its last job), so the heap has a lock; it is touched
/// once per deferral, never on the delivery hot path. An entry is only a hint: the spool index
/// slot holds the message's due time, and an entry that no longer matches it (flushed, held,
/// deleted, attempted meanwhile) is dropped when it comes up.
/// The array grows by a quarter, not double: with a million entries doubling would leave up to
/// half of it empty.
/// </summary>
internal sealed class DeferredQueue
{
    internal struct Entry
    {
        public uint Due;
        public ulong Id;

        public readonly bool Before(in Entry other) => Due != other.Due ? Due < other.Due : Id < other.Id;
    }

    private Entry[] _heap = new Entry[64];
    private int _count;
    private readonly object _gate = new();

    public int Count
    {
        get { lock (_gate) return _count; }
    }

    /// <summary>Array slots held (for memory figures).</summary>
    public int Capacity
    {
        get { lock (_gate) return _heap.Length; }
    }

    public void Schedule(ulong id, uint due)
    {
        lock (_gate)
        {
            if (_count == _heap.Length)
                Array.Resize(ref _heap, _heap.Length + _heap.Length / 4 + 64);
            int i = _count++;
            var entry = new Entry { Due = due, Id = id };
            while (i > 0)
            {
                int parent = (i - 1) / 2;
                if (!entry.Before(_heap[parent]))
                    break;
                _heap[i] = _heap[parent];
                i = parent;
            }
            _heap[i] = entry;
        }
    }

    /// <summary>Takes the first entry due by <paramref name="now"/> (Unix seconds); the caller checks it is current.</summary>
    public bool TryTakeDue(uint now, out Entry entry)
    {
        lock (_gate)
        {
            if (_count == 0 || _heap[0].Due > now)
            {
                entry = default;
                return false;
            }
            entry = _heap[0];
            RemoveTop();
            return true;
        }
    }

    /// <summary>Whether an entry is due by <paramref name="now"/> (it may be stale).</summary>
    public bool HasDue(uint now)
    {
        lock (_gate)
            return _count > 0 && _heap[0].Due <= now;
    }

    private void RemoveTop()
    {
        var last = _heap[--_count];
        int i = 0;
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= _count)
                break;
            if (child + 1 < _count && _heap[child + 1].Before(_heap[child]))
                child++;
            if (!_heap[child].Before(last))
                break;
            _heap[i] = _heap[child];
            i = child;
        }
        if (_count > 0)
            _heap[i] = last;
    }

    /// <summary>Drops the entries that are no longer current (stale ones of messages flushed, held or gone), and shrinks the array.</summary>
    public void Compact(Func<ulong, uint, bool> isCurrent)
    {
        lock (_gate)
        {
            int kept = 0;
            for (int i = 0; i < _count; i++)
                if (isCurrent(_heap[i].Id, _heap[i].Due))
                    _heap[kept++] = _heap[i];
            if (kept == _count && _heap.Length <= _count + _count / 2 + 64)
                return;
            _count = kept;
            Array.Sort(_heap, 0, _count, Comparer.Instance); // a sorted array is a heap
            if (_heap.Length > _count + _count / 2 + 64)
                Array.Resize(ref _heap, _count + _count / 4 + 64);
        }
    }

    private sealed class Comparer : IComparer<Entry>
    {
        public static readonly Comparer Instance = new();
        public int Compare(Entry a, Entry b) => a.Before(b) ? -1 : b.Before(a) ? 1 : 0;
    }
}
