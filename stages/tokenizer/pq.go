package tokenizer

// pq is a binary heap of T ordered by less, without the interface boxing of
// container/heap.
type pq[T any] struct {
	items []T
	less  func(a, b *T) bool
}

func (q *pq[T]) len() int { return len(q.items) }

func (q *pq[T]) push(x T) {
	q.items = append(q.items, x)
	i := len(q.items) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(&q.items[i], &q.items[p]) {
			break
		}
		q.items[i], q.items[p] = q.items[p], q.items[i]
		i = p
	}
}

func (q *pq[T]) pop() T {
	top := q.items[0]
	n := len(q.items) - 1
	q.items[0] = q.items[n]
	q.items = q.items[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && q.less(&q.items[l], &q.items[m]) {
			m = l
		}
		if r < n && q.less(&q.items[r], &q.items[m]) {
			m = r
		}
		if m == i {
			break
		}
		q.items[i], q.items[m] = q.items[m], q.items[i]
		i = m
	}
	return top
}
