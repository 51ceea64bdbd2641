namespace NativeRelay.Traffic.Suppression;

/// <summary>
/// The entries' keys in one open-addressing table (linear probing): per slot the 64-bit key and
/// the journal offset of the record that added it (which is how a listing tells live records from
/// dead ones), 16 bytes. Kept at most three quarters full, doubled when it would be fuller, so a
/// million entries take 2^21 slots, 32 MiB. Readers take no lock: a key is written once into an
/// empty slot (after its offset), removal leaves a tombstone, growth builds a new array and
/// publishes it with one reference write; writers are serialized by the caller.
/// </summary>
internal sealed class SuppressionTable
{
    private const ulong Empty = 0;
    private const ulong Tombstone = 1;
    /// <summary>Keys below this are the markers above; <see cref="SuppressionKeys"/> never makes one.</summary>
    public const ulong FirstKey = 2;
    private const int MinCapacity = 1024;

    private sealed class Slots(int capacity)
    {
        public readonly ulong[] Keys = new ulong[capacity];
        public readonly long[] Offsets = new long[capacity];
        public readonly int Mask = capacity - 1;
    }

    private Slots _slots = new(MinCapacity);
    private int _live;
    private int _used; // live + tombstones

    public int Count => Volatile.Read(ref _live);
    public int Capacity => Volatile.Read(ref _slots).Keys.Length;
    /// <summary>Bytes held by the slots.</summary>
    public long Bytes => (long)Capacity * 16;

    public bool Contains(ulong key)
    {
        var s = Volatile.Read(ref _slots);
        var keys = s.Keys;
        int i = (int)key & s.Mask;
        while (true)
        {
            ulong k = Volatile.Read(ref keys[i]);
            if (k == key)
                return true;
            if (k == Empty)
                return false;
            i = (i + 1) & s.Mask;
        }
    }

    public bool TryGetOffset(ulong key, out long offset)
    {
        var s = Volatile.Read(ref _slots);
        int i = Find(s, key);
        offset = i < 0 ? -1 : Volatile.Read(ref s.Offsets[i]);
        return i >= 0;
    }

    /// <summary>Adds a key (writers only); false when it is there already.</summary>
    public bool TryAdd(ulong key, long offset)
    {
        if (Find(_slots, key) >= 0)
            return false;
        if (_used + 1 > _slots.Keys.Length / 4 * 3)
            Rebuild();
        var s = _slots;
        int i = (int)key & s.Mask;
        while (s.Keys[i] > Tombstone)
            i = (i + 1) & s.Mask;
        if (s.Keys[i] == Empty)
            _used++;
        Volatile.Write(ref s.Offsets[i], offset);
        Volatile.Write(ref s.Keys[i], key);
        _live++;
        return true;
    }

    /// <summary>Removes a key (writers only); the offset of the record that had added it, or -1 when absent.</summary>
    public long Remove(ulong key)
    {
        var s = _slots;
        int i = Find(s, key);
        if (i < 0)
            return -1;
        long offset = s.Offsets[i];
        Volatile.Write(ref s.Keys[i], Tombstone);
        _live--;
        return offset;
    }

    /// <summary>Points a key at its record's new place (compaction; writers only).</summary>
    public void SetOffset(ulong key, long offset)
    {
        var s = _slots;
        int i = Find(s, key);
        if (i >= 0)
            Volatile.Write(ref s.Offsets[i], offset);
    }

    private static int Find(Slots s, ulong key)
    {
        int i = (int)key & s.Mask;
        while (true)
        {
            ulong k = s.Keys[i];
            if (k == key)
                return i;
            if (k == Empty)
                return -1;
            i = (i + 1) & s.Mask;
        }
    }

    // Room for twice the live entries (at least), tombstones dropped; readers keep the old array until they are done.
    private void Rebuild()
    {
        int capacity = MinCapacity;
        while (capacity / 2 < _live + 1)
            capacity *= 2;
        var old = _slots;
        var next = new Slots(capacity);
        for (int j = 0; j < old.Keys.Length; j++)
        {
            ulong k = old.Keys[j];
            if (k <= Tombstone)
                continue;
            int i = (int)k & next.Mask;
            while (next.Keys[i] != Empty)
                i = (i + 1) & next.Mask;
            next.Keys[i] = k;
            next.Offsets[i] = old.Offsets[j];
        }
        _used = _live;
        Volatile.Write(ref _slots, next);
    }
}
