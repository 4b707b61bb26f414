//! Fixed-seed workloads: the same keys and request streams on every run and machine.

/// SplitMix64: small, fast, and fully specified, so workloads never change with a dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Zipf distribution over `n` ranks (0 is the most popular), sampled by inverse CDF.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// The share of requests that go to the `capacity` most popular keys: the best hit ratio
    /// any cache of that capacity can reach on this workload.
    pub(crate) fn ideal_hit_ratio(&self, capacity: usize) -> f64 {
        self.cdf[capacity.min(self.cdf.len()) - 1]
    }

    /// `count` samples, as indices into a key table.
    pub(crate) fn stream(&self, count: usize, seed: u64) -> Vec<u32> {
        let mut rng = Rng::new(seed);
        (0..count).map(|_| self.sample(&mut rng) as u32).collect()
    }
}

/// `n` distinct keys, ranked by popularity; the rank is not visible in the key.
pub(crate) fn keys(n: usize) -> Vec<String> {
    let mut rng = Rng::new(7);
    (0..n)
        .map(|i| format!("key:{:08x}:{i}", rng.next_u64() as u32))
        .collect()
}
