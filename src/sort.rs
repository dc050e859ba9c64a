//! Sorts that keep the module small: the standard library's sorts add
//! several KB of wasm for every element type they are used with, so this
//! crate sorts short lists by insertion ([`sort_small`]) and long ones
//! through one sort of indices ([`sorted`]).

use std::cmp::Ordering;

/// Sorts a short list (the parameters or headers of one request) by
/// insertion. Equal elements are identical, so stability does not matter;
/// the standard library's sorts would add ~4 KB of wasm per element type.
pub(crate) fn sort_small<T: Ord>(items: &mut [T]) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && items.get(j - 1) > items.get(j) {
            items.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// `items` in the order `cmp` says (not stable). Any element type goes
/// through the one instance of the standard sort in [`sort_indices`].
pub(crate) fn sorted<T>(items: Vec<T>, cmp: &dyn Fn(&T, &T) -> Ordering) -> Vec<T> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    sort_indices(&mut order, &|a, b| match (items.get(a), items.get(b)) {
        (Some(x), Some(y)) => cmp(x, y),
        _ => Ordering::Equal,
    });
    let mut items: Vec<Option<T>> = items.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|&i| items.get_mut(i).and_then(Option::take))
        .collect()
}

fn sort_indices(order: &mut [usize], cmp: &dyn Fn(usize, usize) -> Ordering) {
    order.sort_unstable_by(|&a, &b| cmp(a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_small_sorts_like_sort() {
        let mut x: u64 = 7;
        for len in 0..40 {
            let mut items: Vec<(String, String)> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 60).to_string(), (x >> 58 & 3).to_string())
                })
                .collect();
            let mut expected = items.clone();
            expected.sort();
            sort_small(&mut items);
            assert_eq!(items, expected);
        }
    }

    #[test]
    fn sorted_sorts_like_sort() {
        let mut x: u64 = 11;
        for len in [0, 1, 2, 5, 100, 1000] {
            let items: Vec<(u8, String)> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 61) as u8, (x >> 50 & 63).to_string())
                })
                .collect();
            let mut expected = items.clone();
            expected.sort();
            assert_eq!(sorted(items, &|a, b| a.cmp(b)), expected);
        }
    }
}
