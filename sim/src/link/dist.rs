//! Delay jitter distributions with netem's semantics, drawn from exact quantile functions, and
//! correlated draws that keep the configured distribution.
//!
//! # What netem does
//!
//! `tc qdisc … netem delay D J [ρ] distribution X` delays each packet by `D + J·x`. The kernel
//! (`net/sched/sch_netem.c`, `tabledist`) draws a 32-bit value `rnd` and, without a table,
//! returns `rnd % 2J − J + D` (uniform on `[−J, J)`); with a table it returns
//! `D + J·t / 8192`, where `t` is the `rnd % size`-th entry of a table of `s16` values that
//! `tc` loads from `/usr/lib/tc/X.dist` and `NETEM_DIST_SCALE = 8192`. iproute2 builds those
//! tables (`netem/normal.c`, `pareto.c`, `paretonormal.c`, from NIST Net) as 4096 samples of a
//! quantile function:
//!
//! - `normal.c` sweeps `x` over `[−10, 10]`, stores `x` at index `rint(16384·Φ(x))` and keeps
//!   every fourth entry: `t_k = rint(8192·Φ⁻¹((4k + ½)/16384))`, clamped to `s16`.
//! - `pareto.c`: `t = rint(8192 · 4/3 · (p^(−1/3) − 3/2))` for `p = i/65536`, `i = 65536, 65520,
//!   …, 16`, clamped to 32767. `p^(−1/3)` with `p` uniform is a Pareto variate of shape
//!   `a = 3` and scale 1 (mean 3/2, variance 3/4); netem centres it on its mean and scales it by
//!   4/3. Without the cap its standard deviation would be `2/√3 ≈ 1.155`; the cap at
//!   `32767/8192` (hit by 1.1 % of draws) brings it to 0.821 and the mean to −0.033.
//! - `paretonormal.c`: `t_k = (normal_k + 3·pareto_k)/4` with both taken at the same quantile
//!   level — the average of the two *quantile functions* (a comonotone sum), not the 25 %/75 %
//!   mixture its comment suggests.
//!
//! # The distributions here
//!
//! Each [`JitterDist`] is the distribution of the normalised value `x` (the delay is
//! `D + J·x`), given by its quantile function `F⁻¹(u)`, `u ∈ (0, 1)`, computed exactly instead
//! of from a 4096-entry table, with netem's range `|x| ≤ X_MAX = 32767/8192 ≈ 3.99988` (the
//! largest value a table can hold; it also bounds the delay by `D + X_MAX·J`):
//!
//! | name | `F⁻¹(u)` | mean | standard deviation |
//! |---|---|---|---|
//! | `uniform` | `2u − 1` (netem's table-less case: uniform on `[−J, +J]`) | 0 | `1/√3 ≈ 0.57735` |
//! | `normal` | `clamp(Φ⁻¹(u), ±X_MAX)` | 0 | 0.99994 (1 before the clamp) |
//! | `pareto` | `min(4/3·((1 − u)^(−1/3) − 3/2), X_MAX)` | −0.032923 | 0.820855 |
//! | `paretonormal` | `(normal(u) + 3·pareto(u)) / 4` | −0.024692 | 0.834936 |
//!
//! The pareto moments are closed-form (with `y = 3/2 + 3/4·X_MAX`, the capped Pareto variate
//! `M = min(Y, y)` has `E[M] = 3/2 − 1/(2y²)` and `E[M²] = 3 − 2/y`); the paretonormal ones come
//! from numerical integration (checked in the tests). [`JitterDist::mean`] and
//! [`JitterDist::std_dev`] return them. What this leaves out of netem is table artefacts only:
//! the 1/4096 probability steps, the normal table's lopsided ends (about −4 and +3.52) and
//! `pareto.c`'s right-endpoint grid.
//!
//! netem's tc-netem(8) page names `normal` as the default; `tc` itself sends no table when no
//! `distribution` is given and the kernel then draws uniform. [`JitterDist::default`] follows
//! the documented default.
//!
//! # Correlation
//!
//! netem correlates draws by averaging each new uniform value with the previous output,
//! `next = (1 − ρ)·random + ρ·last` (`get_crandom`). That narrows the distribution: the
//! uniform's variance shrinks by `(1 − ρ)/(1 + ρ)`, so with ρ = 0.9 the jitter is about a
//! quarter of what was asked for. Here ([`CorrelatedDraw`]) a Gaussian AR(1) process
//! `z_t = ρ·z_{t−1} + √(1 − ρ²)·e_t` (`e_t` standard normal, `z_0 = e_0`) drives the draws:
//! `u_t = Φ(z_t)` is exactly uniform, and `x_t = F⁻¹(u_t)` has exactly the configured marginal,
//! while consecutive draws are correlated. The lag-1 correlation of `x` is ρ for `normal`
//! (0.499997 and 0.899997 with the clamp, for ρ = 0.5 and 0.9) and, for the others (values
//! from numerical integration, matched by the tests' measurements):
//!
//! | ρ | uniform `(6/π)·asin(ρ/2)` | pareto | paretonormal |
//! |---|---|---|---|
//! | 0.5 | 0.48258 | 0.41286 | 0.45262 |
//! | 0.9 | 0.89146 | 0.86092 | 0.87875 |
//!
//! ρ = 0 gives independent draws. Every draw takes exactly one `u64` from the RNG, so the
//! sequence is a pure function of the RNG state.
//!
//! # Numerics
//!
//! - Φ ([`norm_cdf`], [`norm_sf`]): W. J. Cody's rational Chebyshev approximations ("Rational
//!   Chebyshev approximations for the error function", Math. Comp. 1969; ACM TOMS Algorithm
//!   715, 1993), accurate to a few units in the last place of a double down to the
//!   subnormal range (the tests check ≤ 1e-14 relative against 40-digit values, both tails).
//! - Φ⁻¹ ([`norm_quantile`]): M. J. Wichura, Algorithm AS 241 (PPND16), Applied Statistics 37
//!   (1988), about 1 part in 1e16; tested to ≤ 1e-14 relative.
//! - Uniform variates are `(k + ½)·2⁻⁵³` for a random 53-bit `k`: never 0 or 1.
//!
//! No function here panics, for any input: probabilities are clamped into the open interval,
//! NaN is treated as the neutral value, ρ is clamped into `[0, 0.999999]`.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The largest `|x|` a netem distribution table can hold: `i16::MAX / NETEM_DIST_SCALE`.
pub const X_MAX: f64 = 32767.0 / 8192.0;

/// The largest correlation used: ρ = 1 would freeze the process.
pub const RHO_MAX: f64 = 0.999_999;

/// The distribution of delay jitter, as netem's `distribution` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JitterDist {
    /// Uniform on `[−J, +J]` (standard deviation `J/√3`).
    Uniform,
    /// Normal with standard deviation `J` (clamped at `±X_MAX·J`); netem's documented default.
    #[default]
    Normal,
    /// netem's Pareto (shape 3), centred and scaled by 4/3, capped at `X_MAX·J`: a long tail
    /// above the delay, nothing below `D − 2J/3`.
    Pareto,
    /// netem's paretonormal: the quantile average `(normal + 3·pareto)/4`.
    #[value(name = "paretonormal")]
    ParetoNormal,
}

impl JitterDist {
    /// Every distribution, in the order of the names.
    pub const ALL: [JitterDist; 4] = [
        Self::Uniform,
        Self::Normal,
        Self::Pareto,
        Self::ParetoNormal,
    ];

    /// The name netem and our configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Normal => "normal",
            Self::Pareto => "pareto",
            Self::ParetoNormal => "paretonormal",
        }
    }

    /// The quantile function `F⁻¹(u)` (see the module doc). `u` is clamped into the open
    /// interval `(0, 1)` (NaN counts as ½); the result is finite and within `±X_MAX`.
    pub fn quantile(self, u: f64) -> f64 {
        let u = open_unit_clamp(u);
        match self {
            Self::Uniform => 2.0 * u - 1.0,
            Self::Normal => clamp_x(norm_quantile(u)),
            // 1 − u is exact for u ≥ ½ and loses nothing that matters below.
            Self::Pareto => pareto_from_tail(1.0 - u),
            Self::ParetoNormal => {
                0.25 * clamp_x(norm_quantile(u)) + 0.75 * pareto_from_tail(1.0 - u)
            }
        }
    }

    /// `F⁻¹(Φ(z))`: the value at the quantile level of a standard normal `z`, computed without
    /// the round trip through `u` where that loses accuracy (normal: `z` itself; pareto: from
    /// the upper tail `Φ(−z)`). NaN counts as 0; the result is within `±X_MAX`.
    pub fn from_normal(self, z: f64) -> f64 {
        let z = if z.is_nan() { 0.0 } else { z };
        match self {
            Self::Uniform => {
                let (cum, ccum) = norm_cdf_both(z);
                (cum - ccum).clamp(-1.0, 1.0)
            }
            Self::Normal => clamp_x(z),
            Self::Pareto => pareto_from_tail(norm_sf(z)),
            Self::ParetoNormal => 0.25 * clamp_x(z) + 0.75 * pareto_from_tail(norm_sf(z)),
        }
    }

    /// The mean of `x` (see the module doc's table).
    pub fn mean(self) -> f64 {
        match self {
            Self::Uniform | Self::Normal => 0.0,
            Self::Pareto => -0.032_923_150_332_377_4,
            Self::ParetoNormal => -0.024_692_362_749_283_1,
        }
    }

    /// The standard deviation of `x` (see the module doc's table).
    pub fn std_dev(self) -> f64 {
        match self {
            Self::Uniform => 0.577_350_269_189_625_8,
            Self::Normal => 0.999_939_714_970_842,
            Self::Pareto => 0.820_854_718_336_305_3,
            Self::ParetoNormal => 0.834_936_386_372_119,
        }
    }
}

impl fmt::Display for JitterDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JitterDist {
    type Err = String;

    /// Parses `uniform`, `normal`, `pareto` or `paretonormal` (any case).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        Self::ALL.into_iter().find(|d| d.name().eq_ignore_ascii_case(t)).ok_or_else(|| {
            format!(
                "unknown jitter distribution `{s}`: expected uniform, normal, pareto or paretonormal"
            )
        })
    }
}

/// Correlated draws of a [`JitterDist`] whose marginal distribution is exactly the configured
/// one: a Gaussian AR(1) process mapped through Φ and the quantile function (module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelatedDraw {
    rho: f64,
    /// The last `z`, once there is one.
    last: Option<f64>,
}

impl CorrelatedDraw {
    /// Draws with lag-1 latent correlation `rho` (clamped into `[0, RHO_MAX]`; NaN → 0).
    pub fn new(rho: f64) -> Self {
        Self {
            rho: clamp_rho(rho),
            last: None,
        }
    }

    /// The correlation in use (after clamping).
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// Changes the correlation; the process goes on from its current state.
    pub fn set_rho(&mut self, rho: f64) {
        self.rho = clamp_rho(rho);
    }

    /// The next latent standard normal `z_t` (one `u64` from `rng`).
    pub fn next_normal(&mut self, rng: &mut impl Rng) -> f64 {
        let e = norm_quantile(open_unit(rng));
        let z = match self.last {
            // (1 − ρ)(1 + ρ) keeps precision for ρ near 1.
            Some(last) => self.rho * last + ((1.0 - self.rho) * (1.0 + self.rho)).sqrt() * e,
            None => e,
        };
        self.last = Some(z);
        z
    }

    /// The next correlated uniform `u_t = Φ(z_t)`, within the open interval `(0, 1)`.
    pub fn next_uniform(&mut self, rng: &mut impl Rng) -> f64 {
        open_unit_clamp(norm_cdf(self.next_normal(rng)))
    }

    /// The next normalised value `x_t = F⁻¹(Φ(z_t))` of `dist` (the delay is `D + J·x`).
    pub fn next(&mut self, rng: &mut impl Rng, dist: JitterDist) -> f64 {
        dist.from_normal(self.next_normal(rng))
    }
}

fn clamp_rho(rho: f64) -> f64 {
    if rho.is_nan() {
        0.0
    } else {
        rho.clamp(0.0, RHO_MAX)
    }
}

fn clamp_x(x: f64) -> f64 {
    x.clamp(-X_MAX, X_MAX)
}

/// netem's Pareto value at upper-tail probability `s = 1 − u`, capped at `X_MAX`.
fn pareto_from_tail(s: f64) -> f64 {
    // s = 0 gives +inf, which the cap turns into X_MAX; s ≤ 1 keeps the result ≥ −2/3.
    let s = if s.is_nan() { 0.5 } else { s.clamp(0.0, 1.0) };
    (4.0 / 3.0 * (s.cbrt().recip() - 1.5)).min(X_MAX)
}

/// The largest `f64` below 1.
const BELOW_ONE: f64 = 1.0 - f64::EPSILON / 2.0;

/// `u` clamped into `(0, 1)`; NaN → ½.
fn open_unit_clamp(u: f64) -> f64 {
    if u.is_nan() {
        0.5
    } else {
        u.clamp(f64::MIN_POSITIVE, BELOW_ONE)
    }
}

/// A uniform variate `(k + ½)·2⁻⁵³` in the open interval `(0, 1)`, symmetric about ½.
fn open_unit(rng: &mut impl Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    ((rng.next_u64() >> 11) as f64 + 0.5) * SCALE
}

/// Φ(x), the standard normal distribution function (Cody; relative error < 1e-15).
pub fn norm_cdf(x: f64) -> f64 {
    norm_cdf_both(x).0
}

/// 1 − Φ(x) = Φ(−x), accurate in the upper tail.
pub fn norm_sf(x: f64) -> f64 {
    norm_cdf_both(x).1
}

// Cody's coefficients, as published (ACM TOMS 715, `ANORM`).
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const CODY_A: [f64; 5] = [
    2.2352520354606839287,
    161.02823106855587881,
    1067.6894854603709582,
    18154.981253343561249,
    0.065682337918207449113,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const CODY_B: [f64; 4] = [
    47.20258190468824187,
    976.09855173777669322,
    10260.932208618978205,
    45507.789335026729956,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const CODY_C: [f64; 9] = [
    0.39894151208813466764,
    8.8831497943883759412,
    93.506656132177855979,
    597.27027639480026226,
    2494.5375852903726711,
    6848.1904505362823326,
    11602.651437647350124,
    9842.7148383839780218,
    1.0765576773720192317e-8,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const CODY_D: [f64; 8] = [
    22.266688044328115691,
    235.38790178262499861,
    1519.377599407554805,
    6485.558298266760755,
    18615.571640885098091,
    34900.952721145977266,
    38912.003286093271411,
    19685.429676859990727,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const CODY_P: [f64; 6] = [
    0.21589853405795699,
    0.1274011611602473639,
    0.022235277870649807,
    0.001421619193227893466,
    2.9112874951168792e-5,
    0.02307344176494017303,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const CODY_Q: [f64; 5] = [
    1.28426009614491121,
    0.468238212480865118,
    0.0659881378689285515,
    0.00378239633202758244,
    7.29751555083966205e-5,
];

/// `(Φ(x), 1 − Φ(x))`, each with full relative accuracy (Cody's three ranges: `|x| ≤ 0.66291`,
/// `≤ √32`, beyond). NaN gives `(½, ½)`.
fn norm_cdf_both(x: f64) -> (f64, f64) {
    if x.is_nan() {
        return (0.5, 0.5);
    }
    let y = x.abs();
    if y <= 0.66291 {
        let xsq = if y > f64::EPSILON * 0.5 { x * x } else { 0.0 };
        let (mut num, mut den) = (CODY_A[4] * xsq, xsq);
        for i in 0..3 {
            num = (num + CODY_A[i]) * xsq;
            den = (den + CODY_B[i]) * xsq;
        }
        let t = x * (num + CODY_A[3]) / (den + CODY_B[3]);
        return (0.5 + t, 0.5 - t);
    }
    // The tail Φ(−y) = exp(−y²/2) · R(y).
    let tail = if y <= 32f64.sqrt() {
        let (mut num, mut den) = (CODY_C[8] * y, y);
        for i in 0..7 {
            num = (num + CODY_C[i]) * y;
            den = (den + CODY_D[i]) * y;
        }
        gauss_scaled(y, (num + CODY_C[7]) / (den + CODY_D[7]))
    } else if y < 50.0 {
        let xsq = 1.0 / (y * y);
        let (mut num, mut den) = (CODY_P[5] * xsq, xsq);
        for i in 0..4 {
            num = (num + CODY_P[i]) * xsq;
            den = (den + CODY_Q[i]) * xsq;
        }
        let r = xsq * (num + CODY_P[4]) / (den + CODY_Q[4]);
        const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
        gauss_scaled(y, (FRAC_1_SQRT_2PI - r) / y)
    } else {
        0.0
    };
    if x > 0.0 {
        (1.0 - tail, tail)
    } else {
        (tail, 1.0 - tail)
    }
}

/// `exp(−y²/2)·r`, with `y²` split so that the exponent keeps its precision (Cody).
fn gauss_scaled(y: f64, r: f64) -> f64 {
    let head = (y * 16.0).trunc() / 16.0;
    let del = (y - head) * (y + head);
    (-head * head * 0.5).exp() * (-del * 0.5).exp() * r
}

// Wichura's AS 241 (PPND16) coefficients, as published, lowest degree first.
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const AS241_A: [f64; 8] = [
    3.387132872796366608,
    133.14166789178437745,
    1971.5909503065514427,
    13731.693765509461125,
    45921.953931549871457,
    67265.770927008700853,
    33430.575583588128105,
    2509.0809287301226727,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const AS241_B: [f64; 8] = [
    1.0,
    42.313330701600911252,
    687.1870074920579083,
    5394.1960214247511077,
    21213.794301586595867,
    39307.89580009271061,
    28729.085735721942674,
    5226.495278852854561,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const AS241_C: [f64; 8] = [
    1.42343711074968357734,
    4.6303378461565452959,
    5.7694972214606914055,
    3.64784832476320460504,
    1.27045825245236838258,
    0.24178072517745061177,
    0.0227238449892691845833,
    7.7454501427834140764e-4,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const AS241_D: [f64; 8] = [
    1.0,
    2.05319162663775882187,
    1.6763848301838038494,
    0.68976733498510000455,
    0.14810397642748007459,
    0.0151986665636164571966,
    5.475938084995344946e-4,
    1.05075007164441684324e-9,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const AS241_E: [f64; 8] = [
    6.6579046435011037772,
    5.4637849111641143699,
    1.7848265399172913358,
    0.29656057182850489123,
    0.026532189526576123093,
    0.0012426609473880784386,
    2.71155556874348757815e-5,
    2.01033439929228813265e-7,
];
#[allow(
    clippy::excessive_precision,
    reason = "published coefficients, kept as printed"
)]
const AS241_F: [f64; 8] = [
    1.0,
    0.59983220655588793769,
    0.13692988092273580531,
    0.0148753612908506148525,
    7.868691311456132591e-4,
    1.8463183175100546818e-5,
    1.4215117583164458887e-7,
    2.04426310338993978564e-15,
];

fn horner(c: &[f64; 8], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
}

/// Φ⁻¹(p), the standard normal quantile (Wichura's AS 241; about 1e-16 relative). `p` is
/// clamped into `(0, 1)` (NaN → ½), so the result is finite (within about ±37.5).
pub fn norm_quantile(p: f64) -> f64 {
    let p = open_unit_clamp(p);
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q * horner(&AS241_A, r) / horner(&AS241_B, r);
    }
    // The smaller tail probability; 1 − p is exact for p > ½.
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let v = if r <= 5.0 {
        let r = r - 1.6;
        horner(&AS241_C, r) / horner(&AS241_D, r)
    } else {
        let r = r - 5.0;
        horner(&AS241_E, r) / horner(&AS241_F, r)
    };
    if q < 0.0 { -v } else { v }
}

#[cfg(test)]
#[allow(
    clippy::excessive_precision,
    reason = "reference values kept to 20 digits"
)]
mod tests {
    use super::*;
    use crate::link::SimRng;
    use rand::SeedableRng;

    const N: usize = 200_000;

    fn rel_err(got: f64, want: f64) -> f64 {
        if want == 0.0 {
            got.abs()
        } else {
            ((got - want) / want).abs()
        }
    }

    #[test]
    fn norm_cdf_matches_reference_values() {
        // 20-digit values from mpmath (40-digit arithmetic).
        let cases = [
            (-38.0, 2.8854283600687843084e-316),
            (-20.0, 2.7536241186062336951e-89),
            (-10.0, 7.619853024160526066e-24),
            (-8.0, 6.2209605742717841235e-16),
            (-6.0, 9.865876450376981407e-10),
            (-5.0, 2.8665157187919391167e-7),
            (-4.0, 3.1671241833119921254e-5),
            (-3.0, 0.0013498980316300945267),
            (-2.0, 0.0227501319481792072),
            (-1.5, 0.066807201268858066004),
            (-1.0, 0.15865525393145705141),
            (-0.5, 0.30853753872598689636),
            (-0.1, 0.46017216272297101633),
            (0.0, 0.5),
            (0.3, 0.61791142218895263307),
            (0.6629, 0.74630269913176323432),
            (0.7, 0.75803634777692697138),
            (1.0, 0.84134474606854294859),
            (2.0, 0.9772498680518207928),
            (3.0, 0.99865010196836990547),
            (5.0, 0.99999971334842812081),
        ];
        for (x, want) in cases {
            let got = norm_cdf(x);
            // The subnormal Φ(−38) has fewer significant bits.
            let tol = if want < 1e-300 { 1e-10 } else { 1e-14 };
            assert!(
                rel_err(got, want) <= tol,
                "Φ({x}) = {got:e}, want {want:e} (tol {tol:e} rel)"
            );
            // The upper tail, from the other side: 1 − Φ(−x).
            let sf = norm_sf(-x);
            assert!(
                rel_err(sf, want) <= tol,
                "1−Φ({}) = {sf:e}, want {want:e}",
                -x
            );
        }
        assert_eq!(norm_cdf(-60.0), 0.0);
        assert_eq!(norm_cdf(60.0), 1.0);
        assert_eq!(norm_cdf(f64::NEG_INFINITY), 0.0);
        assert_eq!(norm_cdf(f64::INFINITY), 1.0);
        assert_eq!(norm_cdf(f64::NAN), 0.5);
    }

    #[test]
    fn norm_quantile_matches_reference_values() {
        // From mpmath (50-digit bisection) at the exact binary value of each `p`.
        let cases = [
            (1e-300, -37.047096299361199237),
            (1e-20, -9.2623400897984075796),
            (1e-12, -7.0344838253011319326),
            (1e-6, -4.7534243088228989573),
            (0.001, -3.0902323061678135354),
            (0.01, -2.3263478740408410931),
            (0.025, -1.9599639845400542118),
            (0.075, -1.4395314709384559349),
            (0.2, -0.84162123357291416552),
            (0.5, 0.0),
            (0.8, 0.8416212335729143638),
            (0.925, 1.4395314709384562291),
            (0.975, 1.9599639845400538556),
            (0.999, 3.0902323061678132778),
            (0.999999, 4.7534243088170877657),
        ];
        for (p, want) in cases {
            let got = norm_quantile(p);
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "Φ⁻¹({p}) = {got}, want {want} (tol 1e-14 rel)"
            );
        }
        // Round trips over the whole range: the lower tail through Φ, the upper one through
        // 1 − Φ (Φ itself rounds to 1 there).
        let mut x = -37.0;
        while x <= 37.0 {
            let back = if x <= 0.0 {
                norm_quantile(norm_cdf(x))
            } else {
                -norm_quantile(norm_sf(x))
            };
            assert!(
                (back - x).abs() <= 1e-13 * x.abs().max(1.0),
                "Φ⁻¹(Φ({x})) = {back}"
            );
            x += 0.0137;
        }
        // Never panics, always finite.
        for p in [
            0.0,
            -1.0,
            1.0,
            2.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-320,
        ] {
            assert!(norm_quantile(p).is_finite(), "Φ⁻¹({p})");
        }
        assert!(norm_quantile(0.0) < -37.0 && norm_quantile(1.0) > 8.0);
    }

    #[test]
    fn names_parse_and_display() {
        for d in JitterDist::ALL {
            assert_eq!(d.to_string().parse::<JitterDist>(), Ok(d));
        }
        assert_eq!(
            "ParetoNormal".parse::<JitterDist>(),
            Ok(JitterDist::ParetoNormal)
        );
        assert_eq!(" uniform ".parse::<JitterDist>(), Ok(JitterDist::Uniform));
        let err = "gamma".parse::<JitterDist>().unwrap_err();
        for name in ["gamma", "uniform", "normal", "pareto", "paretonormal"] {
            assert!(err.contains(name), "{err}");
        }
        assert_eq!(JitterDist::default(), JitterDist::Normal);
        assert_eq!(
            serde_json::to_string(&JitterDist::ParetoNormal).unwrap(),
            "\"paretonormal\""
        );
        assert_eq!(
            serde_json::from_str::<JitterDist>("\"pareto\"").unwrap(),
            JitterDist::Pareto
        );
    }

    #[test]
    fn quantiles_are_netems_definitions() {
        use JitterDist::*;
        assert_eq!(Uniform.quantile(0.25), -0.5);
        assert_eq!(Uniform.quantile(0.0), 2.0 * f64::MIN_POSITIVE - 1.0);
        assert!(Uniform.quantile(1.0) < 1.0);
        assert!((Normal.quantile(0.975) - 1.959963984540054).abs() < 1e-14);
        // Pareto: 4/3 (p^(−1/3) − 3/2) with p = 1 − u; p = 1/8 gives 4/3 · (2 − 3/2) = 2/3.
        assert!((Pareto.quantile(0.875) - 2.0 / 3.0).abs() < 1e-15);
        assert!((Pareto.quantile(1e-300) + 2.0 / 3.0).abs() < 1e-15);
        // The cap: P(x = X_MAX) = y^−3 with y = 3/2 + 3/4 X_MAX.
        let y = 1.5 + 0.75 * X_MAX;
        let cap = y.powi(-3);
        assert_eq!(Pareto.quantile(1.0 - cap * 0.999), X_MAX);
        assert!(Pareto.quantile(1.0 - cap * 1.001) < X_MAX);
        assert_eq!(Pareto.quantile(1.0), X_MAX);
        let u = 0.3;
        let pn = (Normal.quantile(u) + 3.0 * Pareto.quantile(u)) / 4.0;
        assert!((ParetoNormal.quantile(u) - pn).abs() < 1e-15);
        // from_normal(z) is quantile(Φ(z)), and monotone.
        for d in JitterDist::ALL {
            let mut prev = f64::NEG_INFINITY;
            let mut z = -9.0;
            while z <= 9.0 {
                let a = d.from_normal(z);
                let b = d.quantile(norm_cdf(z));
                // Beyond z ≈ 8, Φ(z) rounds to 1 and quantile() can only clamp.
                if z.abs() < 7.5 {
                    assert!((a - b).abs() < 1e-9, "{d} at z = {z}: {a} vs {b}");
                }
                assert!(a >= prev, "{d} not monotone at z = {z}");
                assert!(a.abs() <= X_MAX, "{d} out of range at z = {z}");
                prev = a;
                z += 0.01;
            }
            for z in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, -1e300] {
                assert!(d.from_normal(z).is_finite(), "{d}.from_normal({z})");
            }
            for u in [f64::NAN, 0.0, 1.0, -3.0, 7.0] {
                assert!(d.quantile(u).is_finite(), "{d}.quantile({u})");
            }
        }
    }

    /// The analytic moments, recomputed by Simpson integration over z (and the pareto ones in
    /// closed form), so that the constants the sampling tests use are themselves checked.
    #[test]
    fn analytic_moments_are_right() {
        let y = 1.5 + 0.75 * X_MAX;
        let pareto_mean = -(2.0 / 3.0) / (y * y);
        let e_m = 1.5 - 0.5 / (y * y);
        let pareto_sd = 4.0 / 3.0 * (3.0 - 2.0 / y - e_m * e_m).sqrt();
        assert!((JitterDist::Pareto.mean() - pareto_mean).abs() < 1e-15);
        assert!((JitterDist::Pareto.std_dev() - pareto_sd).abs() < 1e-15);
        assert!((JitterDist::Uniform.std_dev() - 3f64.sqrt().recip()).abs() < 1e-16);
        for d in JitterDist::ALL {
            let (lo, hi, n) = (-12.0, 12.0, 48_000);
            let h = (hi - lo) / n as f64;
            let (mut m1, mut m2) = (0.0, 0.0);
            for i in 0..=n {
                let z = lo + h * i as f64;
                let w = if i == 0 || i == n {
                    1.0
                } else if i % 2 == 1 {
                    4.0
                } else {
                    2.0
                };
                let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
                let x = d.from_normal(z);
                m1 += w * pdf * x;
                m2 += w * pdf * x * x;
            }
            let (m1, m2) = (m1 * h / 3.0, m2 * h / 3.0);
            let sd = (m2 - m1 * m1).sqrt();
            assert!(
                (m1 - d.mean()).abs() < 1e-6,
                "{d}: integrated mean {m1} vs {}",
                d.mean()
            );
            assert!(
                (sd - d.std_dev()).abs() < 1e-6,
                "{d}: integrated sd {sd} vs {}",
                d.std_dev()
            );
        }
    }

    fn draws(dist: JitterDist, rho: f64, n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SimRng::seed_from_u64(seed);
        let mut c = CorrelatedDraw::new(rho);
        (0..n).map(|_| c.next(&mut rng, dist)).collect()
    }

    fn mean_sd(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let m = x.iter().sum::<f64>() / n;
        let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
        (m, v.sqrt())
    }

    fn lag1(x: &[f64]) -> f64 {
        let (m, sd) = mean_sd(x);
        let cov = x.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / (x.len() - 1) as f64;
        cov / (sd * sd)
    }

    /// Mean and standard deviation of every distribution, independent and correlated, against
    /// the analytic values. Tolerances are 5 standard errors, with the variance of a mean of an
    /// AR(1) series inflated by (1 + ρ)/(1 − ρ) and that of a standard deviation taken as
    /// 2 sd²/n (normal) times 3 for the heavy-tailed ones.
    #[test]
    fn marginals_match_analytic_values_with_and_without_correlation() {
        for (seed, dist) in JitterDist::ALL.into_iter().enumerate() {
            for rho in [0.0, 0.5, 0.9] {
                let x = draws(dist, rho, N, 100 + seed as u64);
                let (m, sd) = mean_sd(&x);
                let inflate = (1.0 + rho) / (1.0 - rho);
                let heavy = if matches!(dist, JitterDist::Pareto | JitterDist::ParetoNormal) {
                    3.0
                } else {
                    1.0
                };
                let tol_m = 5.0 * dist.std_dev() * (inflate / N as f64).sqrt();
                let tol_sd = 5.0 * dist.std_dev() * (heavy * inflate / (2.0 * N as f64)).sqrt();
                println!(
                    "{dist} ρ={rho}: mean {m:.5} (want {:.5}), sd {sd:.5} (want {:.5})",
                    dist.mean(),
                    dist.std_dev()
                );
                assert!(
                    (m - dist.mean()).abs() <= tol_m,
                    "{dist} ρ={rho}: mean {m} vs {} (tol ±{tol_m:.4})",
                    dist.mean()
                );
                assert!(
                    (sd - dist.std_dev()).abs() <= tol_sd,
                    "{dist} ρ={rho}: sd {sd} vs {} (tol ±{tol_sd:.4})",
                    dist.std_dev()
                );
                assert!(x.iter().all(|v| v.abs() <= X_MAX), "{dist}: out of range");
            }
        }
    }

    /// Lag-1 autocorrelation: ρ for normal; for the others the values from numerical
    /// integration of the Gaussian copula (module doc). Tolerance: 5 standard errors of a
    /// lag-1 estimate, √((1 − r²)/n), times 2 for pareto's tail.
    #[test]
    fn lag1_correlation_is_as_configured() {
        let want = [
            (JitterDist::Normal, [0.499_997, 0.899_997], 1.0),
            (JitterDist::Uniform, [0.482_584, 0.891_456], 1.0),
            (JitterDist::Pareto, [0.412_855, 0.860_917], 2.0),
            (JitterDist::ParetoNormal, [0.452_616, 0.878_749], 2.0),
        ];
        for (i, (dist, rs, k)) in want.into_iter().enumerate() {
            for (j, rho) in [0.5, 0.9].into_iter().enumerate() {
                let r = lag1(&draws(dist, rho, N, 200 + (2 * i + j) as u64));
                let tol = 5.0 * k * ((1.0 - rs[j] * rs[j]) / N as f64).sqrt();
                println!("{dist} ρ={rho}: lag-1 {r:.5} (want {:.5})", rs[j]);
                assert!(
                    (r - rs[j]).abs() <= tol,
                    "{dist} ρ={rho}: lag-1 {r} vs {} (tol ±{tol:.4})",
                    rs[j]
                );
            }
        }
        // ρ = 0: independent.
        for dist in JitterDist::ALL {
            let r = lag1(&draws(dist, 0.0, N, 300));
            let tol = 5.0 * 2.0 / (N as f64).sqrt();
            assert!(r.abs() <= tol, "{dist} ρ=0: lag-1 {r} (tol ±{tol:.4})");
        }
    }

    #[test]
    fn rho_is_clamped_and_zero_means_independent() {
        assert_eq!(CorrelatedDraw::new(1.0).rho(), RHO_MAX);
        assert_eq!(CorrelatedDraw::new(7.0).rho(), RHO_MAX);
        assert_eq!(CorrelatedDraw::new(-0.5).rho(), 0.0);
        assert_eq!(CorrelatedDraw::new(f64::NAN).rho(), 0.0);
        // ρ = 0 is exactly F⁻¹ of independent uniforms: the same values as a fresh process for
        // every draw.
        let mut rng = SimRng::seed_from_u64(5);
        let mut c = CorrelatedDraw::new(0.0);
        let got: Vec<f64> = (0..100)
            .map(|_| c.next(&mut rng, JitterDist::Pareto))
            .collect();
        let mut rng = SimRng::seed_from_u64(5);
        let fresh: Vec<f64> = (0..100)
            .map(|_| CorrelatedDraw::new(0.3).next(&mut rng, JitterDist::Pareto))
            .collect();
        assert_eq!(got, fresh);
        // ρ = 1 (clamped) still moves, slowly, and never panics or leaves the range.
        let x = draws(JitterDist::ParetoNormal, 1.0, 10_000, 9);
        assert!(x.iter().all(|v| v.is_finite() && v.abs() <= X_MAX));
        assert!(x.windows(2).all(|w| (w[1] - w[0]).abs() < 0.05));
    }

    #[test]
    fn draws_are_deterministic_and_set_rho_keeps_state() {
        assert_eq!(
            draws(JitterDist::Normal, 0.7, 1000, 11),
            draws(JitterDist::Normal, 0.7, 1000, 11)
        );
        assert_ne!(
            draws(JitterDist::Normal, 0.7, 1000, 11),
            draws(JitterDist::Normal, 0.7, 1000, 12)
        );
        let mut rng = SimRng::seed_from_u64(3);
        let mut c = CorrelatedDraw::new(0.99);
        let a = c.next_normal(&mut rng);
        c.set_rho(0.999_999);
        let b = c.next_normal(&mut rng);
        assert!((a - b).abs() < 0.01, "the state carried over: {a} → {b}");
        let u = c.next_uniform(&mut rng);
        assert!(u > 0.0 && u < 1.0);
    }
}
