"""Congestion-control policies, driven by hand-made events and times, then in a closed loop.

The first part checks each policy's published reaction with hand-worked figures (100 Gb/s link,
8 us base RTT, 1000 B packets, the HPCC simulator's defaults). The second part runs every
policy against one bottleneck queue (a fluid model, below) and checks the published orderings:
every controlled sender keeps the queue far below an uncontrolled one, and HPCC keeps it
shorter than DCQCN at about the same throughput.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import pytest

from fabric.cc import (
    CC_NAMES,
    CongestionControl,
    CongestionControlError,
    Dcqcn,
    Dctcp,
    Hpcc,
    IntRecord,
    Swift,
    Timely,
    make_cc,
)
from fabric.errors import FabricError

NS = 1_000_000_000
US = 1_000
GBPS = 1_000_000_000
LINE = 100 * GBPS
BASE_RTT = 8 * US
G = 1 / 256


def cc(name: str, **params: Any) -> CongestionControl:
    return make_cc(name, line_rate_bps=LINE, base_rtt_ns=BASE_RTT, **params)


# -- factory and interface -------------------------------------------------------------------


@pytest.mark.parametrize("name", CC_NAMES)
def test_every_policy_starts_at_line_rate(name: str) -> None:
    policy = cc(name)
    assert policy.name == name
    assert policy.rate_bps == LINE
    if name in ("none", "dcqcn", "timely"):
        assert policy.window_bytes is None
    else:
        assert policy.window_bytes == 100_000  # one BDP: 100 Gb/s x 8 us


def test_unknown_name_is_a_fabric_error_naming_the_choices() -> None:
    with pytest.raises(FabricError, match=r"unknown congestion control 'cubic'; choose one of "
                                          r"none, dcqcn, timely, swift, hpcc, dctcp"):
        cc("cubic")


def test_unknown_parameter_names_the_valid_ones() -> None:
    with pytest.raises(CongestionControlError,
                       match=r"dcqcn: unknown parameter\(s\) gain; its parameters are: g, "):
        cc("dcqcn", gain=0.5)
    with pytest.raises(CongestionControlError, match=r"none: unknown parameter\(s\) eta; .*none"):
        cc("none", eta=0.9)


def test_bad_values_are_rejected_before_anything_runs() -> None:
    with pytest.raises(CongestionControlError, match=r"dcqcn: g must be in \(0, 1\], got 0"):
        cc("dcqcn", g=0)
    with pytest.raises(CongestionControlError, match=r"hpcc: eta must be in \(0, 1\], got 1.5"):
        cc("hpcc", eta=1.5)
    with pytest.raises(CongestionControlError, match=r"timely: need 0 < t_low_ns < t_high_ns"):
        cc("timely", t_low_ns=600_000)
    with pytest.raises(CongestionControlError, match=r"line_rate_bps must be a positive integer"):
        make_cc("swift", line_rate_bps=0, base_rtt_ns=BASE_RTT)
    with pytest.raises(CongestionControlError, match=r"base_rtt_ns must be a positive integer"):
        make_cc("dctcp", line_rate_bps=LINE, base_rtt_ns=-1)


def test_none_is_always_line_rate() -> None:
    policy = cc("none")
    policy.on_cnp(0)
    policy.on_nak(1)
    policy.on_ack(2, 1000, rtt_ns=10**9, ecn_echo=True,
                  int_records=[IntRecord(0, LINE, 2, 10**9, 10**9)])
    policy.on_rtt(3, 10**9)
    policy.on_timer(4)
    assert policy.rate_bps == LINE
    assert policy.window_bytes is None
    assert policy.next_timer_ns() is None


# -- DCQCN -----------------------------------------------------------------------------------


def dcqcn(**params: object) -> Dcqcn:
    policy = cc("dcqcn", **params)
    assert isinstance(policy, Dcqcn)
    return policy


def test_dcqcn_defaults_scale_with_the_link() -> None:
    policy = dcqcn()
    assert policy.rate_ai_bps == pytest.approx(20e6)  # 5 * 100/25 Mb/s
    assert policy.rate_hai_bps == pytest.approx(200e6)  # 50 * 100/25 Mb/s
    assert policy.min_rate_bps == pytest.approx(1e9)
    slow = make_cc("dcqcn", line_rate_bps=25 * GBPS, base_rtt_ns=BASE_RTT)
    assert isinstance(slow, Dcqcn)
    assert slow.rate_ai_bps == pytest.approx(5e6)
    assert slow.rate_hai_bps == pytest.approx(50e6)


def test_dcqcn_has_no_timer_before_the_first_cnp() -> None:
    policy = dcqcn()
    assert policy.next_timer_ns() is None
    policy.on_ack(0, 1000, rtt_ns=9000)
    assert policy.rate_bps == LINE


def test_dcqcn_first_cnp_halves_the_rate_with_alpha_one() -> None:
    policy = dcqcn()
    policy.on_cnp(0)
    assert policy.alpha == 1.0
    assert policy.rate_bps == 50 * GBPS  # Rc *= 1 - alpha/2
    assert policy.target_rate_bps == LINE
    assert policy.next_timer_ns() == 1 * US  # the alpha timer


def test_dcqcn_alpha_decays_by_1_minus_g_per_tick_without_cnps() -> None:
    policy = dcqcn()
    policy.on_cnp(0)
    policy.on_timer(10 * US)  # ticks at 1..10 us
    assert policy.alpha == pytest.approx((1 - G) ** 10, rel=1e-12)
    policy.on_timer(10 * US + 999)  # no tick due yet
    assert policy.alpha == pytest.approx((1 - G) ** 10, rel=1e-12)


def test_dcqcn_cnp_cuts_by_alpha_over_2_and_raises_alpha() -> None:
    policy = dcqcn()
    policy.on_cnp(0)
    a10 = (1 - G) ** 10
    policy.on_cnp(10_500)
    assert policy.rate_bps == round(50e9 * (1 - a10 / 2))
    # No increase since the first cut, so the target keeps the pre-cut rate (simulator default).
    assert policy.target_rate_bps == LINE
    policy.on_timer(11 * US)  # the tick after a CNP raises alpha
    assert policy.alpha == pytest.approx((1 - G) * a10 + G, rel=1e-12)
    policy.on_timer(12 * US)  # and the next one, without a CNP, decays it again
    assert policy.alpha == pytest.approx((1 - G) * ((1 - G) * a10 + G), rel=1e-12)


def test_dcqcn_alpha_rises_towards_one_under_steady_cnps() -> None:
    policy = dcqcn()
    policy.on_cnp(0)
    policy.on_timer(200 * US)
    low = policy.alpha
    for t in range(200 * US, 1200 * US, US // 2):  # a CNP in every alpha period
        policy.on_cnp(t)
    assert policy.alpha > 0.97 > low


def test_dcqcn_cuts_at_most_once_per_rate_decrease_interval() -> None:
    policy = dcqcn()
    policy.on_cnp(0)  # cut at 0; next cut allowed at 4 us
    policy.on_cnp(1 * US)
    policy.on_cnp(2 * US)
    assert policy.rate_bps == 50 * GBPS  # held off
    assert policy.next_timer_ns() == 3 * US  # the next alpha tick comes before the held cut
    policy.on_timer(4 * US)
    # Ticks at 1 us (no CNP yet counted: the first CNP only starts the timer), 2 us and 3 us
    # (CNPs at 1 us and 2 us), 4 us (none), then the deferred cut at 4 us.
    alpha = 1.0
    for cnp_seen in (False, True, True, False):
        alpha = (1 - G) * alpha + (G if cnp_seen else 0)
    assert policy.alpha == pytest.approx(alpha, rel=1e-12)
    assert policy.rate_bps == round(50e9 * (1 - alpha / 2))
    policy.on_timer(7 * US)
    assert policy.rate_bps == round(50e9 * (1 - alpha / 2))  # nothing more pending


def test_dcqcn_recovers_fast_recovery_then_ai_then_hai() -> None:
    policy = dcqcn(clamp_target_rate=True)
    policy.on_cnp(0)  # Rc 50G, Rt 100G (the clamp takes the pre-cut rate: 100G)
    assert policy.target_rate_bps == LINE
    policy.on_cnp(4 * US)  # Rt = 50G, Rc = 50G * (1 - alpha/2)
    alpha = (1 - G) ** 4
    rate = 50e9 * (1 - alpha / 2)
    target = 50e9
    assert policy.rate_bps == round(rate)
    assert policy.target_rate_bps == round(target)
    t = 4 * US
    for stage in range(5):  # fast recovery: halfway to the target, target unchanged
        t += 300 * US
        policy.on_timer(t)
        rate = (rate + target) / 2
        assert policy.stage == stage + 1
        assert policy.rate_bps == round(rate)
        assert policy.target_rate_bps == round(target)
    assert policy.rate_bps == round(target - (target - 50e9 * (1 - alpha / 2)) / 32)
    t += 300 * US  # additive increase
    policy.on_timer(t)
    target += 20e6
    rate = (rate + target) / 2
    assert (policy.target_rate_bps, policy.rate_bps) == (round(target), round(rate))
    for _ in range(3):  # hyper increase from then on
        t += 300 * US
        policy.on_timer(t)
        target += 200e6
        rate = (rate + target) / 2
        assert (policy.target_rate_bps, policy.rate_bps) == (round(target), round(rate))


def test_dcqcn_recovery_stops_at_line_rate() -> None:
    policy = dcqcn()
    policy.on_cnp(0)
    policy.on_timer(100_000 * US)
    assert policy.rate_bps == LINE
    assert policy.target_rate_bps == LINE


def test_dcqcn_never_goes_below_min_rate() -> None:
    policy = dcqcn(clamp_target_rate=True)
    rates = []
    for t in range(0, 2000 * US, 4 * US):
        policy.on_cnp(t)
        rates.append(policy.rate_bps)
    assert min(rates) == 1 * GBPS
    assert rates[-1] == 1 * GBPS


def test_dcqcn_late_on_timer_runs_every_missed_deadline_in_order() -> None:
    stepped, late = dcqcn(), dcqcn()
    for policy in (stepped, late):
        policy.on_cnp(0)
    for t in range(US, 2000 * US + 1, US):
        stepped.on_timer(t)
    late.on_timer(2000 * US)
    assert late.alpha == pytest.approx(stepped.alpha, rel=1e-12)
    assert late.rate_bps == stepped.rate_bps
    assert late.next_timer_ns() == stepped.next_timer_ns()


# -- TIMELY ----------------------------------------------------------------------------------


def timely(**params: object) -> Timely:
    policy = cc("timely", **params)
    assert isinstance(policy, Timely)
    return policy


def test_timely_first_sample_only_primes() -> None:
    policy = timely()
    policy.on_rtt(0, 900 * US)
    assert policy.rate_bps == LINE


def test_timely_decreases_above_thigh_by_beta_times_1_minus_thigh_over_rtt() -> None:
    policy = timely()
    policy.on_rtt(0, 600 * US)
    policy.on_rtt(600 * US, 700 * US)
    assert policy.rate_bps == round(100e9 * (1 - 0.8 * (1 - 500 / 700)))
    assert policy.consecutive_increases == 0


def test_timely_updates_at_most_once_per_rtt() -> None:
    policy = timely()
    policy.on_rtt(0, 600 * US)
    policy.on_rtt(599 * US, 700 * US)  # still inside the first RTT: ignored
    assert policy.rate_bps == LINE
    policy.on_ack(600 * US, 1000, rtt_ns=700 * US)  # RTT samples may ride on ACKs
    assert policy.rate_bps == round(100e9 * (1 - 0.8 * (1 - 500 / 700)))


def test_timely_additive_below_tlow_then_hai_after_5_increases() -> None:
    policy = timely()
    policy.on_rtt(0, 600 * US)
    policy.on_rtt(600 * US, 700 * US)
    rate = 100e9 * (1 - 0.8 * (1 - 500 / 700))
    t = 1300 * US
    for n in range(8):
        policy.on_rtt(t, 30 * US)  # below Tlow: increase whatever the gradient
        rate += 100e6 if n < 5 else 500e6  # delta = bw Mb/s; HAI 5 * delta after 5 increases
        assert policy.rate_bps == round(rate)
        assert policy.consecutive_increases == n + 1
        t += 30 * US


def test_timely_follows_the_gradient_between_the_thresholds() -> None:
    policy = timely()
    policy.on_rtt(0, 100 * US)
    policy.on_rtt(100 * US, 120 * US)  # diff +20 us: rtt_diff 17.5 us, gradient 0.875
    assert policy.rtt_diff_ns == pytest.approx(17_500)
    assert policy.gradient == pytest.approx(0.875)
    rate = 100e9 * (1 - 0.8 * 0.875)
    assert policy.rate_bps == round(rate)
    policy.on_rtt(220 * US, 110 * US)  # rtt_diff 0.125*17500 + 0.875*(-10000) < 0: increase
    assert policy.rtt_diff_ns == pytest.approx(-6_562.5)
    rate += 100e6
    assert policy.rate_bps == round(rate)
    policy.on_rtt(330 * US, 112 * US)  # rtt_diff 929.6875 ns, gradient 0.046484375
    assert policy.gradient == pytest.approx(929.6875 / 20_000)
    rate *= 1 - 0.8 * 929.6875 / 20_000
    assert policy.rate_bps == round(rate)
    assert policy.consecutive_increases == 0


def test_timely_steep_gradient_floors_at_min_rate() -> None:
    policy = timely()
    policy.on_rtt(0, 60 * US)
    policy.on_rtt(60 * US, 400 * US)  # gradient 14.9: 1 - beta * g < 0
    assert policy.rate_bps == 1 * GBPS


# -- Swift -----------------------------------------------------------------------------------


def swift(**params: object) -> Swift:
    policy = cc("swift", **params)
    assert isinstance(policy, Swift)
    return policy


def test_swift_target_is_base_plus_hop_scaling() -> None:
    assert swift().target_delay_ns == 8 * US + 10 * US + 1 * US
    assert swift(base_target_ns=25 * US, hops=3, hop_scale_ns=2 * US).target_delay_ns == 31 * US


def test_swift_grows_about_ai_packets_per_rtt_below_target() -> None:
    policy = swift()
    assert policy.cwnd == pytest.approx(100)
    policy.on_ack(0, 1000, rtt_ns=10 * US)
    assert policy.cwnd == pytest.approx(100.01)  # ai / cwnd per packet acked
    for i in range(99):
        policy.on_ack(i, 1000, rtt_ns=10 * US)
    assert policy.cwnd == pytest.approx(101, abs=0.01)  # one packet per window
    assert policy.window_bytes == 100_995
    assert policy.rate_bps == LINE


def test_swift_cuts_in_proportion_to_excess_delay_once_per_rtt() -> None:
    policy = swift()
    policy.on_ack(0, 1000, rtt_ns=38 * US)  # target 19 us: 1 - 0.8 * (38 - 19) / 38 = 0.6
    assert policy.cwnd == pytest.approx(60)
    policy.on_ack(10 * US, 1000, rtt_ns=38 * US)  # within one RTT of the cut: no second cut
    policy.on_ack(37 * US, 1000, rtt_ns=38 * US)
    assert policy.cwnd == pytest.approx(60)
    policy.on_ack(38 * US, 1000, rtt_ns=24 * US)  # 1 - 0.8 * 5 / 24
    assert policy.cwnd == pytest.approx(60 * (1 - 0.8 * 5 / 24))


def test_swift_cut_is_capped_by_max_mdf() -> None:
    policy = swift()
    policy.on_ack(0, 1000, rtt_ns=190 * US)  # 1 - 0.8 * 171/190 = 0.28 < 1 - max_mdf
    assert policy.cwnd == pytest.approx(50)
    policy.on_nak(100 * US)  # within the RTT of the cut
    assert policy.cwnd == pytest.approx(50)
    policy.on_nak(190 * US)
    assert policy.cwnd == pytest.approx(25)


def test_swift_paces_below_one_packet() -> None:
    policy = swift(init_cwnd=0.5)
    policy.on_rtt(0, 20 * US)
    assert policy.window_bytes == 1000
    assert policy.rate_bps == round(0.5 * 1000 * 8 * NS / (20 * US))  # 200 Mb/s


# -- HPCC ------------------------------------------------------------------------------------


def hpcc(**params: object) -> Hpcc:
    policy = cc("hpcc", **params)
    assert isinstance(policy, Hpcc)
    return policy


def rec(ts_ns: int, tx_bytes: int, qlen_bytes: int, hop: int = 0,
        line_rate_bps: int = LINE) -> IntRecord:
    return IntRecord(hop, line_rate_bps, ts_ns, tx_bytes, qlen_bytes)


# B * T = 100 Gb/s x 8 us = 100_000 B; W_AI = 10*100/25 Mb/s x 8 us = 40 B.


def test_hpcc_first_ack_only_stores_the_records() -> None:
    policy = hpcc()
    policy.on_ack(0, 1000, int_records=[rec(0, 0, 50_000)])
    assert policy.window_bytes == 100_000
    assert policy.last_sample_u is None


def test_hpcc_u_from_queue_and_tx_rate_on_hand_worked_numbers() -> None:
    policy = hpcc()
    assert policy.w_ai_bytes == pytest.approx(40)
    policy.on_ack(0, 1000, int_records=[rec(0, 0, 20_000)])
    # 80_000 B in 8 us = 80 Gb/s -> 0.8; queue 20_000 / 100_000 -> 0.2; tau = T so U = u.
    policy.on_ack(8 * US, 1000, int_records=[rec(8 * US, 80_000, 20_000)])
    assert policy.last_sample_u == pytest.approx(1.0)
    assert policy.utilisation == pytest.approx(1.0)
    assert policy.window_bytes == 95_040  # 100_000 / (1.0 / 0.95) + 40
    assert policy.rate_bps == round(95_040 * 8 * NS / BASE_RTT)  # W / T = 95.04 Gb/s


@pytest.mark.parametrize(("tx_bytes", "qlen", "u"), [
    (95_000, 0, 0.95),  # tx-rate term alone
    (50_000, 45_000, 0.95),  # half and half
    (0, 95_000, 0.95),  # queue term alone
    (95_000, 50_000, 1.45),  # both
])
def test_hpcc_queue_and_tx_rate_terms_both_count(tx_bytes: int, qlen: int, u: float) -> None:
    policy = hpcc()
    policy.on_ack(0, 1000, int_records=[rec(0, 0, qlen)])
    policy.on_ack(8 * US, 1000, int_records=[rec(8 * US, tx_bytes, qlen)])
    assert policy.last_sample_u == pytest.approx(u)
    assert policy.window_bytes == min(100_000, round(100_000 * 0.95 / u + 40))  # <= one BDP


def test_hpcc_queue_term_uses_the_smaller_of_two_consecutive_queues() -> None:
    policy = hpcc()
    policy.on_ack(0, 1000, int_records=[rec(0, 0, 10_000)])
    policy.on_ack(8 * US, 1000, int_records=[rec(8 * US, 0, 90_000)])
    assert policy.last_sample_u == pytest.approx(0.1)


def test_hpcc_most_utilised_hop_decides() -> None:
    policy = hpcc()
    first = [rec(0, 0, 0, hop=0), rec(0, 0, 0, hop=1, line_rate_bps=50 * GBPS)]
    policy.on_ack(0, 1000, int_records=first)
    # hop 0: 60 Gb/s of 100 -> 0.6; hop 1: 40 Gb/s of 50 -> 0.8, queue 0 (min with 0)
    second = [rec(8 * US, 60_000, 0, hop=0),
              rec(8 * US, 40_000, 30_000, hop=1, line_rate_bps=50 * GBPS)]
    policy.on_ack(8 * US, 1000, int_records=second)
    assert policy.last_sample_u == pytest.approx(0.8)
    # hop 1 again with its queue now counted: 30_000 / (50 Gb/s x 8 us = 50_000 B) = 0.6
    third = [rec(16 * US, 120_000, 0, hop=0),
             rec(16 * US, 80_000, 30_000, hop=1, line_rate_bps=50 * GBPS)]
    policy.on_ack(16 * US, 1000, int_records=third)
    assert policy.last_sample_u == pytest.approx(1.4)


def test_hpcc_u_is_smoothed_over_tau_over_t() -> None:
    policy = hpcc(initial_u=1.0)
    policy.on_ack(0, 1000, int_records=[rec(0, 0, 0)])
    policy.on_ack(2 * US, 1000, int_records=[rec(2 * US, 10_000, 0)])  # u = 0.4, tau = T/4
    assert policy.last_sample_u == pytest.approx(0.4)
    assert policy.utilisation == pytest.approx(0.75 * 1.0 + 0.25 * 0.4)


def test_hpcc_reference_window_moves_once_per_rtt() -> None:
    policy = hpcc()
    policy.on_ack(0, 1000, int_records=[rec(0, 0, 20_000)])  # update mark: 1000 + 100_000
    policy.on_ack(8 * US, 50_000, int_records=[rec(8 * US, 80_000, 20_000)])  # u = 1.0
    assert policy.window_bytes == 95_040
    assert policy.reference_window_bytes == pytest.approx(100_000)  # not yet a full RTT
    policy.on_ack(16 * US, 50_000, int_records=[rec(16 * US, 160_000, 20_000)])  # u = 1.0 again
    assert policy.window_bytes == 95_040  # per-ACK W still scales the old W_c
    policy.on_ack(24 * US, 1000, int_records=[rec(24 * US, 240_000, 20_000)])  # past the mark
    assert policy.window_bytes == 95_040
    assert policy.reference_window_bytes == pytest.approx(95_040)
    policy.on_ack(32 * US, 1000, int_records=[rec(32 * US, 320_000, 20_000)])
    assert policy.window_bytes == round(95_040 * 0.95 + 40)
    assert policy.reference_window_bytes == pytest.approx(95_040)  # next update one W later


def test_hpcc_additive_increase_below_eta_up_to_max_stage() -> None:
    policy = hpcc(max_stage=2)
    policy.on_ack(0, 1000, int_records=[rec(0, 0, 100_000)])
    tx = 0
    # Shrink W first: a fully used link with a queue (u = 2) halves it below eta's share.
    tx += 100_000
    policy.on_ack(8 * US, 200_000, int_records=[rec(8 * US, tx, 100_000)])
    w = 100_000 * 0.95 / 2 + 40
    assert policy.window_bytes == round(w)
    windows = []
    for i in range(3):  # u = 0.5 < eta: W_c + W_AI twice, then multiplicative (stage 2)
        tx += 50_000
        policy.on_ack((16 + 8 * i) * US, 200_000, int_records=[rec((16 + 8 * i) * US, tx, 0)])
        windows.append(policy.window_bytes)
    assert windows[0] == round(w + 40)
    assert windows[1] == round(w + 80)
    assert windows[2] == round((w + 80) * 0.95 / 0.5 + 40)
    assert policy.inc_stage == 0


def test_hpcc_window_stays_within_min_and_line_rate_bdp() -> None:
    policy = hpcc()
    policy.on_ack(0, 1000, int_records=[rec(0, 0, 0)])
    policy.on_ack(8 * US, 200_000, int_records=[rec(8 * US, 0, 0)])  # idle link: U = 0
    assert policy.window_bytes == 100_000
    policy.on_ack(16 * US, 200_000, int_records=[rec(16 * US, 100_000, 10**9)])
    assert policy.window_bytes >= round(policy.min_window_bytes)
    assert policy.rate_bps >= 100_000_000  # 100 Mb/s floor at 100 Gb/s


# -- DCTCP -----------------------------------------------------------------------------------


def dctcp(**params: object) -> Dctcp:
    policy = cc("dctcp", **params)
    assert isinstance(policy, Dctcp)
    return policy


def test_dctcp_grows_one_mss_per_window_without_marks() -> None:
    policy = dctcp()
    for i in range(100):
        policy.on_ack(i, 1000)
    assert policy.window_bytes == pytest.approx(101_000, abs=10)
    assert policy.rate_bps == LINE


def test_dctcp_cuts_by_alpha_over_2_once_per_window() -> None:
    policy = dctcp(initial_alpha=0.5)
    policy.on_ack(0, 1000, ecn_echo=True)
    assert policy.window_bytes == 75_000  # 100_000 * (1 - 0.5/2)
    for i in range(75):  # the rest of the reduction window: echoes do not cut again
        policy.on_ack(i, 1000, ecn_echo=True)
    assert policy.window_bytes == 75_000
    alpha = policy.alpha
    policy.on_ack(100, 1000, ecn_echo=True)  # first echo after it: the next cut
    assert policy.window_bytes == round(75_000 * (1 - alpha / 2))


@pytest.mark.parametrize("every", [2, 4, 10])
def test_dctcp_alpha_converges_to_the_marked_fraction(every: int) -> None:
    policy = dctcp()
    for i in range(40_000):
        policy.on_ack(i, 1000, ecn_echo=i % every == 0)
    assert policy.alpha == pytest.approx(1 / every, abs=0.02)


def test_dctcp_alpha_decays_by_1_minus_g_per_clean_window() -> None:
    policy = dctcp()
    for i in range(100):  # exactly one window of 100_000 B
        policy.on_ack(i, 1000)
    assert policy.alpha == pytest.approx(15 / 16)


def test_dctcp_loss_halves_once_per_window() -> None:
    policy = dctcp()
    policy.on_nak(0)
    policy.on_nak(1)
    assert policy.window_bytes == 50_000


# -- closed loop -----------------------------------------------------------------------------
#
# A fluid model of one bottleneck port (100 Gb/s, 32 MB buffer) shared FIFO by `flows` senders,
# each on its own 100 Gb/s NIC, advanced in fixed steps. Each step every sender puts
# min(rate x step, window - in flight) bytes on the wire; they reach the queue half a base RTT
# later; the port serves line rate x step, shared in proportion to each flow's bytes queued,
# and marks what it serves (RED between Kmin and Kmax for DCQCN, a step at K for DCTCP) from
# the queue at dequeue. Half a base RTT after that the sender sees the ACK: the bytes, their
# marks, RTT = base + queue / line rate, and the port's INT record; a DCQCN receiver sends a
# CNP for a marked packet at most once per 4 us. Overflow is dropped and reported as a NAK.


@dataclass(frozen=True)
class LoopResult:
    mean_queue_bytes: float
    max_queue_bytes: float
    utilisation: float
    dropped_bytes: float


BW = LINE // GBPS
MARKING: dict[str, dict[str, float]] = {  # the HPCC simulator's switch settings, scaled by bw
    "dcqcn": {"kmin": 100 * BW / 25 * 1000, "kmax": 400 * BW / 25 * 1000, "pmax": 0.2},
    "dctcp": {"kmin": 30 * BW / 10 * 1000, "kmax": 30 * BW / 10 * 1000, "pmax": 1.0},
}


def mark_probability(name: str, qlen: float) -> float:
    if name not in MARKING:
        return 0.0
    m = MARKING[name]
    if qlen <= m["kmin"]:
        return 0.0
    if qlen > m["kmax"]:
        return 1.0
    return m["pmax"] * (qlen - m["kmin"]) / (m["kmax"] - m["kmin"])


@functools.cache
def run_loop(name: str, *, flows: int = 4, stagger_ns: int = 0, duration_ns: int = 4_000_000,
             warmup_ns: int = 1_000_000, step_ns: int = 250, buffer_bytes: int = 32_000_000,
             cnp_interval_ns: int = 4_000, mtu: int = 1000) -> LoopResult:
    ccs = [make_cc(name, line_rate_bps=LINE, base_rtt_ns=BASE_RTT, mtu=mtu)
           for _ in range(flows)]
    capacity = LINE * step_ns / NS / 8
    half = BASE_RTT // 2 // step_ns
    inflight = [0.0] * flows
    queue = [0.0] * flows
    ahead: dict[int, list[float]] = {}
    back: dict[int, list[tuple[int, float, float, int, IntRecord, bool, float]]] = {}
    mark_acc = [0.0] * flows
    last_cnp = [-(10**18)] * flows
    tx_total = q_sum = q_max = tx_measured = dropped = 0.0
    measured = 0
    for step in range(duration_ns // step_ns):
        now = step * step_ns
        for f, nbytes, marked, rtt, record, cnp, lost in back.pop(step, ()):
            policy = ccs[f]
            if cnp:
                policy.on_cnp(now)
            if lost > 0:
                inflight[f] -= lost
                policy.on_nak(now)
            if marked > 0:
                policy.on_ack(now, round(marked), rtt, True, [record])
            if nbytes - marked > 0:
                policy.on_ack(now, round(nbytes - marked), rtt, False, [record])
            inflight[f] -= nbytes
        sent = []
        for f, policy in enumerate(ccs):
            deadline = policy.next_timer_ns()
            if deadline is not None and deadline <= now:
                policy.on_timer(now)
            if now < f * stagger_ns:
                sent.append(0.0)
                continue
            allowed = policy.rate_bps * step_ns / NS / 8
            window = policy.window_bytes
            if window is not None:
                allowed = min(allowed, max(0.0, window - inflight[f]))
            inflight[f] += allowed
            sent.append(allowed)
        ahead[step + half] = sent
        arrivals = ahead.pop(step, None) or [0.0] * flows
        total_in = sum(arrivals)
        backlog = sum(queue) + total_in
        lost_now = [0.0] * flows
        if backlog > buffer_bytes:
            excess = backlog - buffer_bytes
            lost_now = [a * excess / total_in for a in arrivals]
            dropped += excess
            backlog = buffer_bytes
        for f in range(flows):
            queue[f] += arrivals[f] - lost_now[f]
        served_total = min(capacity, backlog)
        served = [q * served_total / backlog if backlog > 0 else 0.0 for q in queue]
        for f in range(flows):
            queue[f] -= served[f]
        tx_total += served_total
        qlen = sum(queue)
        p = mark_probability(name, qlen)
        rtt = BASE_RTT + round(qlen * 8 * NS / LINE)
        record = IntRecord(0, LINE, now, round(tx_total), round(qlen))
        events = back.setdefault(step + half, [])
        for f in range(flows):
            marked = served[f] * p
            cnp = False
            if marked > 0:
                mark_acc[f] += marked
                if mark_acc[f] >= mtu and now - last_cnp[f] >= cnp_interval_ns:
                    cnp, last_cnp[f], mark_acc[f] = True, now, 0.0
            if served[f] > 0 or lost_now[f] > 0 or cnp:
                events.append((f, served[f], marked, rtt, record, cnp, lost_now[f]))
        if now >= warmup_ns:
            measured += 1
            q_sum += qlen
            q_max = max(q_max, qlen)
            tx_measured += served_total
    return LoopResult(q_sum / measured, q_max, tx_measured / (capacity * measured), dropped)


CONTROLLED = [name for name in CC_NAMES if name != "none"]


@pytest.mark.parametrize("stagger_ns", [0, 200_000])
@pytest.mark.parametrize("name", CONTROLLED)
def test_every_policy_keeps_the_queue_far_below_an_uncontrolled_sender(
        name: str, stagger_ns: int) -> None:
    uncontrolled = run_loop("none", stagger_ns=stagger_ns)
    assert uncontrolled.mean_queue_bytes > 25_000_000  # the 32 MB buffer, full
    assert uncontrolled.dropped_bytes > 0
    controlled = run_loop(name, stagger_ns=stagger_ns)
    assert controlled.max_queue_bytes < uncontrolled.mean_queue_bytes / 20
    assert controlled.dropped_bytes == 0
    assert controlled.utilisation > 0.8


def test_hpcc_keeps_a_shorter_queue_than_dcqcn_at_similar_throughput() -> None:
    hp, dc = run_loop("hpcc"), run_loop("dcqcn")
    assert hp.mean_queue_bytes < dc.mean_queue_bytes / 10
    assert hp.max_queue_bytes < dc.max_queue_bytes
    assert dc.utilisation > 0.85
    assert hp.utilisation > dc.utilisation - 0.05
    assert hp.utilisation == pytest.approx(0.95, abs=0.01)  # HPCC holds U at eta


def test_dctcp_holds_the_queue_near_k_and_swift_near_its_target() -> None:
    dc = run_loop("dctcp")
    k = MARKING["dctcp"]["kmin"]
    assert 0.8 * k < dc.mean_queue_bytes < 1.1 * k
    sw = run_loop("swift")
    target_queue = (19 * US - BASE_RTT) * LINE / NS / 8  # target delay minus base, in bytes
    assert sw.mean_queue_bytes == pytest.approx(target_queue, rel=0.1)
