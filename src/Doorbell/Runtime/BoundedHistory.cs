namespace Doorbell.Runtime;

/// <summary>
/// The last <c>capacity</c> items added, oldest first, and how many were ever added: a ring, so a history that a
/// guest, a device or a client can grow at will (interrupts taken, SMMU events read) costs bounded memory and adding
/// never moves the others.
/// </summary>
public sealed class BoundedHistory<T>(int capacity) : IReadOnlyList<T>
{
    readonly T[] _ring = new T[capacity > 0 ? capacity : throw new ArgumentOutOfRangeException(nameof(capacity))];
    int _start, _count;

    /// <summary>Items ever added (those no longer held included).</summary>
    public long Total { get; private set; }

    public int Capacity => _ring.Length;

    public void Add(T item)
    {
        Total++;
        if (_count < _ring.Length)
        {
            _ring[(_start + _count++) % _ring.Length] = item;
            return;
        }
        _ring[_start] = item;
        _start = (_start + 1) % _ring.Length;
    }

    public void AddRange(IEnumerable<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        foreach (var i in items) Add(i);
    }

    /// <summary>The items added after the first <paramref name="total"/> (a reader's cursor: the <see cref="Total"/> it last
    /// saw) that are still held, oldest first; those already overwritten are skipped.</summary>
    public IEnumerable<T> Since(long total)
    {
        var first = Math.Max(total - (Total - _count), 0);
        for (var i = first; i < _count; i++) yield return _ring[(_start + i) % _ring.Length];
    }

    /// <summary>
    /// What a reader has not seen yet: the items after its cursor (the <see cref="Total"/> it last saw) that are still
    /// held, oldest first; the cursor moves to <see cref="Total"/>. Nothing new allocates nothing.
    /// </summary>
    public T[] TakeSince(ref long cursor)
    {
        var items = cursor == Total ? [] : Since(cursor).ToArray();
        cursor = Total;
        return items;
    }

    /// <summary>Forgets the items held (<see cref="Total"/> keeps counting from where it was).</summary>
    public void Clear()
    {
        Array.Clear(_ring);
        _start = _count = 0;
    }

    public int Count => _count;

    public T this[int index] =>
        (uint)index < (uint)_count ? _ring[(_start + index) % _ring.Length] : throw new ArgumentOutOfRangeException(nameof(index));

    public IEnumerator<T> GetEnumerator()
    {
        for (var i = 0; i < _count; i++) yield return _ring[(_start + i) % _ring.Length];
    }

    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
}
