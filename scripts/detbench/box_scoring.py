"""COCO box scoring, number for number pycocotools' COCOeval (bbox), at full val2017 scale.

COCOeval matches each image and category in Python loops over thresholds, detections and
ground truth: 1.5 M detections take minutes and gigabytes of dicts. Here the same greedy
matching runs compiled over flat arrays (numba), and the accumulation is vectorized with the
same floating-point operations in the same order, so the precision and recall arrays are
bit-identical; pycocotools' own `summarize` then turns them into the 12 numbers.

The rules kept, because each changes numbers:
- images in `np.unique` order of their ids (text order for string ids): COCOeval breaks
  score ties across images in that order;
- per image and category, detections sorted by score with a stable sort and cut at the
  largest maxDets; ground truth in file order, ignored objects last (stable);
- a crowd may match many detections and is ignored; IoU against a crowd divides by the
  detection's area; a detection prefers the best unignored object, and the later one of
  equal IoU; a match's value is the object's id, so an object with id 0 never counts as
  matched (as in COCOeval);
- unmatched detections outside an area range are ignored in it.
Annotation ids must be unique (coco_data.quiet_coco refuses files where they repeat):
pycocotools looks objects up by id, so it would score one object in place of the others.
"""

import contextlib
import functools
import io

import numpy as np


@functools.cache
def _compiled_match():
    import numba

    return numba.njit(cache=True, nogil=True)(_match)


def _match(dt_box, dt_area, groups, gt_box, gt_area, gt_crowd, gt_id, area_ranges, thresholds, matched, ignored):
    """COCOeval.evaluateImg for the (category, image) groups that hold detections and ground truth.

    dt_*: detections sorted by group, then by score (stable), at most maxDets per group;
    gt_*: ground truth sorted by group, in file order within it. groups: rows of (first
    detection, end, first object, end). Fills matched (dtMatches != 0) and ignored (dtIgnore)
    per detection, area range and IoU threshold.
    """
    areas, steps = area_ranges.shape[0], thresholds.shape[0]
    for group in range(groups.shape[0]):
        d0, d1, g0, g1 = groups[group]
        objects = g1 - g0
        ious = np.zeros((d1 - d0, objects))
        for d in range(d0, d1):  # maskUtils.iou (bbIou), operation for operation
            dx, dy, dw, dh = dt_box[d, 0], dt_box[d, 1], dt_box[d, 2], dt_box[d, 3]
            for j in range(objects):
                gx, gy, gw, gh = gt_box[g0 + j, 0], gt_box[g0 + j, 1], gt_box[g0 + j, 2], gt_box[g0 + j, 3]
                w = min(dw + dx, gw + gx) - max(dx, gx)
                if w <= 0:
                    continue
                h = min(dh + dy, gh + gy) - max(dy, gy)
                if h <= 0:
                    continue
                overlap = w * h
                union = dw * dh if gt_crowd[g0 + j] else dw * dh + gw * gh - overlap
                ious[d - d0, j] = overlap / union
        order = np.empty(objects, np.int64)
        object_ignored = np.empty(objects, np.bool_)
        for a in range(areas):
            low, high = area_ranges[a, 0], area_ranges[a, 1]
            n = 0  # ignored objects last, each part in file order: COCOeval's stable sort
            for flag in (False, True):
                for j in range(objects):
                    g = g0 + j
                    if (gt_crowd[g] or gt_area[g] < low or gt_area[g] > high) == flag:
                        order[n], object_ignored[n] = j, flag
                        n += 1
            for t in range(steps):
                taken = np.zeros(objects, np.bool_)
                for d in range(d0, d1):
                    best = min(thresholds[t], 1 - 1e-10)
                    m = -1
                    for n in range(objects):
                        if taken[n] and not gt_crowd[g0 + order[n]]:
                            continue
                        if m > -1 and not object_ignored[m] and object_ignored[n]:
                            break
                        if ious[d - d0, order[n]] < best:
                            continue
                        best = ious[d - d0, order[n]]
                        m = n
                    hit = m > -1 and gt_id[g0 + order[m]] != 0
                    outside = dt_area[d] < low or dt_area[d] > high
                    matched[d, a, t] = hit
                    ignored[d, a, t] = (m > -1 and object_ignored[m]) or (not hit and outside)
                    if m > -1:
                        taken[m] = True


def _ranks(column, values):
    """Position of each entry of `column` in the sorted `values`, -1 where absent."""
    column = np.asarray(column)
    if len(values) == 0 or len(column) == 0:
        return np.full(len(column), -1, np.int64)
    position = np.searchsorted(values, column)
    inside = position < len(values)
    found = np.zeros(len(column), bool)
    found[inside] = values[position[inside]] == column[inside]
    return np.where(found, position, -1)


def _group_bounds(keys, count):
    """[start, end) of each key 0..count-1 in a sorted key column."""
    return np.searchsorted(keys, np.arange(count)), np.searchsorted(keys, np.arange(count), side="right")


def evaluate(truth, detections, image_ids, category_ids, params):
    """COCOeval.evaluate + accumulate: the `eval` dict (precision, recall, scores).

    truth: columns image, category, box (x, y, w, h), area, iscrowd, id (file order).
    detections: columns image, category, box, score (results order); area is w * h, as loadRes.
    """
    images = np.unique(np.asarray(image_ids))
    categories = np.unique(np.asarray(category_ids))
    thresholds = np.asarray(params.iouThrs, np.float64)
    recall_steps = np.asarray(params.recThrs, np.float64)
    area_ranges = np.asarray(params.areaRng, np.float64)
    max_dets = sorted(params.maxDets)
    T, R, K, A, M = len(thresholds), len(recall_steps), len(categories), len(area_ranges), len(max_dets)

    def in_evaluation(columns):
        image = _ranks(columns["image"], images)
        category = _ranks(columns["category"], categories)
        keep = (image >= 0) & (category >= 0)
        return image[keep], category[keep], keep

    gt_image, gt_category, keep = in_evaluation(truth)
    gt_group = gt_category * len(images) + gt_image
    order = np.argsort(gt_group, kind="stable")
    gt_group = gt_group[order]
    gt_box = np.ascontiguousarray(np.asarray(truth["box"], np.float64).reshape(-1, 4)[keep][order])
    gt_area = np.asarray(truth["area"], np.float64)[keep][order]
    gt_crowd = np.asarray(truth["iscrowd"]).astype(bool)[keep][order]
    gt_id = np.asarray(truth["id"], np.float64)[keep][order]
    gt_category = gt_category[order]

    dt_image, dt_category, keep = in_evaluation(detections)
    dt_score = np.asarray(detections["score"], np.float64)[keep]
    dt_group = dt_category * len(images) + dt_image
    order = np.lexsort((-dt_score, dt_group))  # stable: equal scores keep results order
    dt_group, dt_score, dt_category = dt_group[order], dt_score[order], dt_category[order]
    starts, _ = _group_bounds(dt_group, K * len(images))
    rank = np.arange(len(dt_group)) - starts[dt_group]
    top = rank < max_dets[-1]
    order, dt_group, dt_score, dt_category, rank = order[top], dt_group[top], dt_score[top], dt_category[top], rank[top]
    dt_box = np.ascontiguousarray(np.asarray(detections["box"], np.float64).reshape(-1, 4)[keep][order])
    dt_area = dt_box[:, 2] * dt_box[:, 3]

    # matching, only where a group has both detections and ground truth
    dt_starts, dt_ends = _group_bounds(dt_group, K * len(images))
    gt_starts, gt_ends = _group_bounds(gt_group, K * len(images))
    both = np.flatnonzero((dt_ends > dt_starts) & (gt_ends > gt_starts))
    groups = np.stack([dt_starts[both], dt_ends[both], gt_starts[both], gt_ends[both]], axis=1).astype(np.int64)
    matched = np.zeros((len(dt_group), A, T), bool)
    outside = (dt_area[:, None] < area_ranges[:, 0]) | (dt_area[:, None] > area_ranges[:, 1])
    ignored = np.repeat(outside[:, :, None], T, axis=2)  # unmatched: ignored outside the range
    match = _compiled_match()
    match(dt_box, dt_area, groups, gt_box, gt_area, gt_crowd, gt_id, area_ranges, thresholds, matched, ignored)

    # accumulate: per category, detections in COCOeval's order (images in order, each image's
    # by score), then a stable sort by score across images
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    gt_ignored = gt_crowd[:, None] | (gt_area[:, None] < area_ranges[:, 0]) | (gt_area[:, None] > area_ranges[:, 1])
    category_starts, category_ends = _group_bounds(dt_category, K)
    gt_category_starts, gt_category_ends = _group_bounds(gt_category, K)
    for k in range(K):
        lo, hi = category_starts[k], category_ends[k]
        by_score = np.argsort(-dt_score[lo:hi], kind="mergesort")
        positives = np.count_nonzero(~gt_ignored[gt_category_starts[k] : gt_category_ends[k]], axis=0)
        for m, max_det in enumerate(max_dets):
            chosen = by_score[rank[lo:hi][by_score] < max_det] + lo
            sorted_scores, found = dt_score[chosen], len(chosen)
            counted = ~ignored[chosen]  # (detections, area ranges, thresholds)
            hits = matched[chosen]
            tp_sum = np.cumsum(hits & counted, axis=0).astype(float)
            fp_sum = np.cumsum(~hits & counted, axis=0).astype(float)
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1], axis=0)[::-1]  # COCOeval's backward max loop
            for a in np.flatnonzero(positives):  # no positives: -1, as COCOeval leaves it
                rc = tp_sum[:, a, :] / positives[a]
                recall[:, k, a, m] = rc[-1] if found else 0
                for t in range(T):
                    steps = np.searchsorted(rc[:, t], recall_steps, side="left")
                    reached = steps < found
                    q, ss = np.zeros(R), np.zeros(R)
                    q[reached], ss[reached] = pr[steps[reached], a, t], sorted_scores[steps[reached]]
                    precision[t, :, k, a, m], scores[t, :, k, a, m] = q, ss
    return {"counts": [T, R, K, A, M], "precision": precision, "recall": recall, "scores": scores}


def score_boxes(truth, detections, image_ids, category_ids):
    """The 12 COCO numbers and pycocotools' summary table for columns of ground truth and
    detections (see `evaluate`), over the given images and categories."""
    from pycocotools.cocoeval import COCOeval

    evaluation = COCOeval(iouType="bbox")
    evaluation.params.imgIds = list(np.unique(np.asarray(image_ids)))
    evaluation.params.catIds = list(np.unique(np.asarray(category_ids)))
    result = evaluate(truth, detections, evaluation.params.imgIds, evaluation.params.catIds, evaluation.params)
    evaluation.eval = {"params": evaluation.params, **result}
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        evaluation.summarize()
    return [float(value) for value in evaluation.stats], table.getvalue()
