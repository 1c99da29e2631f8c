//! Typed decoding and encoding: hand-computed vectors for every order, a
//! round trip through every type and order, write refusals, and no panic on
//! any registers.

use proptest::prelude::*;
use shopfloor_bridge_modbus::codec::{Data, Write, WriteError, decode, encode};
use shopfloor_bridge_modbus::config::{Area, Order, Tag, TagType};
use shopfloor_schemas::Value;

fn tag(kind: TagType, order: &str) -> Tag {
    let (swap_bytes, swap_words) = match order {
        "ABCD" => (false, false),
        "CDAB" => (false, true),
        "BADC" => (true, false),
        "DCBA" => (true, true),
        other => panic!("{other}"),
    };
    let area = if kind == TagType::Bool { Area::Coil } else { Area::HoldingRegister };
    let mut tag = Tag::new("t", area, 0, kind);
    (tag.order, tag.writable) = (Order { swap_bytes, swap_words }, true);
    tag
}

fn regs(t: &Tag, r: &[u16]) -> Value {
    decode(t, Data::Registers(r)).unwrap()
}

#[test]
fn thirty_two_bit_orders_match_hand_computed_registers() {
    // 1.5f32 is 0x3FC00000; 0x01020304 as u32.
    for (order, float, int) in [
        ("ABCD", [0x3FC0, 0x0000], [0x0102, 0x0304]),
        ("CDAB", [0x0000, 0x3FC0], [0x0304, 0x0102]),
        ("BADC", [0xC03F, 0x0000], [0x0201, 0x0403]),
        ("DCBA", [0x0000, 0xC03F], [0x0403, 0x0201]),
    ] {
        assert_eq!(regs(&tag(TagType::F32, order), &float), Value::F64(1.5), "{order}");
        assert_eq!(regs(&tag(TagType::U32, order), &int), Value::I64(0x0102_0304), "{order}");
        assert_eq!(
            encode(&tag(TagType::U32, order), &Value::I64(0x0102_0304)),
            Ok(Write::Registers(int.to_vec()))
        );
    }
}

#[test]
fn sixty_four_bit_orders_match_hand_computed_registers() {
    // 0x0102030405060708 in the four orders (8-letter names GHEFCDAB etc.).
    let v = 0x0102_0304_0506_0708_u64;
    for (order, r) in [
        ("ABCD", [0x0102, 0x0304, 0x0506, 0x0708]),
        ("CDAB", [0x0708, 0x0506, 0x0304, 0x0102]),
        ("BADC", [0x0201, 0x0403, 0x0605, 0x0807]),
        ("DCBA", [0x0807, 0x0605, 0x0403, 0x0201]),
    ] {
        assert_eq!(regs(&tag(TagType::U64, order), &r), Value::U64(v), "{order}");
        assert_eq!(regs(&tag(TagType::I64, order), &r), Value::I64(v as i64), "{order}");
    }
    // -2.5 as f64 is 0xC004000000000000.
    assert_eq!(regs(&tag(TagType::F64, "ABCD"), &[0xC004, 0, 0, 0]), Value::F64(-2.5));
    assert_eq!(regs(&tag(TagType::F64, "CDAB"), &[0, 0, 0, 0xC004]), Value::F64(-2.5));
}

#[test]
fn small_views_of_a_register() {
    assert_eq!(regs(&tag(TagType::I16, "ABCD"), &[0xFFFE]), Value::I64(-2));
    assert_eq!(regs(&tag(TagType::U16, "ABCD"), &[0xFFFE]), Value::I64(65534));
    assert_eq!(regs(&tag(TagType::I16, "BADC"), &[0xFEFF]), Value::I64(-2));
    assert_eq!(regs(&tag(TagType::Bit(3), "ABCD"), &[0x0008]), Value::Bool(true));
    assert_eq!(regs(&tag(TagType::Bit(2), "ABCD"), &[0x0008]), Value::Bool(false));
    assert_eq!(regs(&tag(TagType::Bit(15), "ABCD"), &[0x8000]), Value::Bool(true));
    assert_eq!(regs(&tag(TagType::I8 { high: true }, "ABCD"), &[0xFF01]), Value::I64(-1));
    assert_eq!(regs(&tag(TagType::I8 { high: false }, "ABCD"), &[0xFF01]), Value::I64(1));
    assert_eq!(regs(&tag(TagType::U8 { high: true }, "ABCD"), &[0xFF01]), Value::I64(255));
    assert_eq!(regs(&tag(TagType::U8 { high: true }, "BADC"), &[0xFF01]), Value::I64(1));
    assert_eq!(
        decode(&tag(TagType::Bool, "ABCD"), Data::Bits(&[true, false])),
        Ok(Value::Bool(true))
    );
}

#[test]
fn strings_trim_and_never_fail() {
    let t = tag(TagType::String(4), "ABCD");
    assert_eq!(regs(&t, &[0x4142, 0x2043, 0x2000, 0x0000]), Value::String("AB C".into()));
    let swapped = tag(TagType::String(2), "BADC");
    assert_eq!(regs(&swapped, &[0x4241, 0x0043]), Value::String("ABC".into()));
    // An inner NUL ends it; invalid UTF-8 is replaced.
    assert_eq!(regs(&t, &[0x4100, 0x4242, 0, 0]), Value::String("A".into()));
    assert_eq!(regs(&t, &[0xFF41, 0, 0, 0]), Value::String("\u{FFFD}A".into()));
}

#[test]
fn scale_and_offset_give_engineering_units_and_back() {
    let mut t = tag(TagType::I16, "ABCD");
    (t.scale, t.offset) = (0.1, -10.0);
    assert_eq!(regs(&t, &[1234]), Value::F64(1234.0 * 0.1 - 10.0));
    assert_eq!(encode(&t, &Value::F64(113.4)), Ok(Write::Registers(vec![1234])));
    assert_eq!(encode(&t, &Value::F64(-20.0)), Ok(Write::Registers(vec![(-100_i16) as u16])));
}

#[test]
fn writes_that_cannot_be_are_refused_with_the_reason() {
    let mut t = tag(TagType::U16, "ABCD");
    t.writable = false;
    assert_eq!(encode(&t, &Value::I64(1)), Err(WriteError::NotWritable("t".into())));
    let mut t = tag(TagType::U16, "ABCD");
    (t.min, t.max) = (Some(0.0), Some(100.0));
    let e = encode(&t, &Value::I64(101)).unwrap_err();
    assert!(e.to_string().contains("101 is outside its range 0..=100"), "{e}");
    assert!(matches!(
        encode(&tag(TagType::U16, "ABCD"), &Value::I64(70_000)),
        Err(WriteError::Overflow { .. })
    ));
    assert!(matches!(
        encode(&tag(TagType::I16, "ABCD"), &Value::I64(-40_000)),
        Err(WriteError::Overflow { .. })
    ));
    assert!(matches!(
        encode(&tag(TagType::U16, "ABCD"), &Value::String("x".into())),
        Err(WriteError::Type { .. })
    ));
    assert!(matches!(
        encode(&tag(TagType::Bool, "ABCD"), &Value::I64(2)),
        Err(WriteError::Type { .. })
    ));
    // NaN and the infinities, for integer and float tags alike (a NaN
    // passed the min/max check of float tags).
    for kind in [TagType::U32, TagType::F32, TagType::F64] {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut t = tag(kind, "ABCD");
            t.min = Some(0.0);
            t.max = Some(100.0);
            assert!(
                matches!(encode(&t, &Value::F64(bad)), Err(WriteError::NotFinite { .. })),
                "{kind:?} {bad}"
            );
        }
    }
    assert!(matches!(
        encode(&tag(TagType::String(1), "ABCD"), &Value::String("abc".into())),
        Err(WriteError::Overflow { .. })
    ));
    let mut input = tag(TagType::U16, "ABCD");
    input.area = Area::InputRegister;
    assert!(matches!(encode(&input, &Value::I64(1)), Err(WriteError::NotWritable(_))));
}

#[test]
fn bits_and_bytes_are_written_with_a_mask() {
    assert_eq!(
        encode(&tag(TagType::Bit(3), "ABCD"), &Value::Bool(true)),
        Ok(Write::Mask { and: !0x0008, or: 0x0008 })
    );
    assert_eq!(
        encode(&tag(TagType::Bit(3), "ABCD"), &Value::Bool(false)),
        Ok(Write::Mask { and: !0x0008, or: 0 })
    );
    assert_eq!(
        encode(&tag(TagType::Bit(0), "BADC"), &Value::Bool(true)),
        Ok(Write::Mask { and: !0x0100, or: 0x0100 })
    );
    assert_eq!(
        encode(&tag(TagType::U8 { high: true }, "ABCD"), &Value::I64(0xAB)),
        Ok(Write::Mask { and: 0x00FF, or: 0xAB00 })
    );
    assert_eq!(
        encode(&tag(TagType::I8 { high: false }, "ABCD"), &Value::I64(-1)),
        Ok(Write::Mask { and: 0xFF00, or: 0x00FF })
    );
    assert_eq!(encode(&tag(TagType::Bool, "ABCD"), &Value::Bool(true)), Ok(Write::Coil(true)));
}

/// What a masked write does to a register.
fn apply(reg: u16, w: &Write) -> u16 {
    match *w {
        Write::Mask { and, or } => (reg & and) | (or & !and),
        _ => panic!("{w:?}"),
    }
}

fn order() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["ABCD", "CDAB", "BADC", "DCBA"])
}

proptest! {
    /// Every numeric type in every order: a value written reads back the same.
    #[test]
    fn integers_round_trip(order in order(), x in any::<i64>()) {
        let cases: Vec<(TagType, Value)> = vec![
            (TagType::I16, Value::I64(x as i16 as i64)),
            (TagType::U16, Value::I64(x as u16 as i64)),
            (TagType::I32, Value::I64(x as i32 as i64)),
            (TagType::U32, Value::I64(x as u32 as i64)),
            (TagType::I64, Value::I64(x)),
            (TagType::U64, Value::U64(x as u64)),
        ];
        for (kind, v) in cases {
            // A single register has no words to swap.
            let one = if order.starts_with('A') || order.starts_with('C') { "ABCD" } else { "BADC" };
            let t = tag(kind, if kind.width() == 1 { one } else { order });
            let Ok(Write::Registers(r)) = encode(&t, &v) else { panic!("{kind:?} {v:?}") };
            prop_assert_eq!(r.len(), usize::from(kind.width()));
            prop_assert_eq!(regs(&t, &r), v, "{:?} {}", kind, order);
        }
    }

    #[test]
    fn floats_round_trip_bit_exactly(order in order(), x in any::<f64>(), y in any::<f32>()) {
        let t = tag(TagType::F64, order);
        let Ok(Write::Registers(r)) = encode(&t, &Value::F64(x)) else { panic!() };
        let Value::F64(back) = regs(&t, &r) else { panic!() };
        prop_assert_eq!(back.to_bits(), x.to_bits());
        let t = tag(TagType::F32, order);
        let Ok(Write::Registers(r)) = encode(&t, &Value::F64(f64::from(y))) else { panic!() };
        let Value::F64(back) = regs(&t, &r) else { panic!() };
        prop_assert_eq!((back as f32).to_bits(), y.to_bits());
    }

    /// Bits and bytes written by mask change only themselves.
    #[test]
    fn masked_writes_touch_only_their_bits(reg in any::<u16>(), n in 0_u8..16, on in any::<bool>(), byte in any::<u8>(), swap in any::<bool>()) {
        let o = if swap { "BADC" } else { "ABCD" };
        let t = tag(TagType::Bit(n), o);
        let after = apply(reg, &encode(&t, &Value::Bool(on)).unwrap());
        prop_assert_eq!(regs(&t, &[after]), Value::Bool(on));
        for other in (0..16).filter(|&b| b != n) {
            let o_tag = tag(TagType::Bit(other), o);
            prop_assert_eq!(regs(&o_tag, &[after]), regs(&o_tag, &[reg]));
        }
        for high in [true, false] {
            let t = tag(TagType::U8 { high }, o);
            let after = apply(reg, &encode(&t, &Value::I64(byte.into())).unwrap());
            prop_assert_eq!(regs(&t, &[after]), Value::I64(byte.into()));
            let other = tag(TagType::U8 { high: !high }, o);
            prop_assert_eq!(regs(&other, &[after]), regs(&other, &[reg]));
        }
    }

    /// Any registers, any length, any type: a value or an error, no panic.
    #[test]
    fn any_registers_decode_without_panic(r in prop::collection::vec(any::<u16>(), 0..6), k in 0_usize..14, order in order()) {
        let kinds = [TagType::Bool, TagType::Bit(15), TagType::I8 { high: true }, TagType::U8 { high: false }, TagType::I16, TagType::U16, TagType::I32, TagType::U32, TagType::I64, TagType::U64, TagType::F32, TagType::F64, TagType::String(3), TagType::String(5)];
        let t = tag(kinds[k], order);
        let _ = decode(&t, Data::Registers(&r));
        let bits: Vec<bool> = r.iter().map(|x| x % 2 == 0).collect();
        let _ = decode(&t, Data::Bits(&bits));
    }
}
