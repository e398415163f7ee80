"""Meta-learners: ProtoNet, Matching Networks, Relation Networks, R2-D2, MetaOptNet-SVM, the
MAML family (MAML, first-order MAML, Meta-SGD, ANIL), Proto-MAML and Reptile; and the
transfer baselines over a backbone pre-trained as a classifier of the base classes
(:class:`TransferLearner`): SimpleShot, Baseline++, Meta-Baseline and TIM.

All share :class:`Learner`'s interface: the call ``learner(support_x, support_y, query_x)``
(differentiable query logits of one task or a batch, for training loops of one's own),
``meta_backward(batch, ways)`` (meta-training loss,
back-propagated; ``sync=False`` keeps the loss and accuracy on the device, for GPU loops),
``evaluate_batch(batch, ways)`` (per-task query accuracy),
``query_logits(batch, ways)`` (detached), ``attack_logits(batch, ways)`` (query outputs
differentiable with respect to the images, parameters constant, for attacks) and
``predict(support_x, support_y, query_x)`` for one task.
"""

from ._transfer import TransferLearner
from .base import Learner, Task, task_batch_norm
from .baseline_pp import BaselinePP
from .maml import MAML
from .matching import MatchingNet
from .meta_baseline import MetaBaseline
from .metaoptnet import MetaOptNet
from .protomaml import ProtoMAML
from .protonet import ProtoNet
from .r2d2 import R2D2
from .relation import RelationNet
from .reptile import Reptile
from .simpleshot import SimpleShot
from .tim import TIM

__all__ = ["MAML", "R2D2", "TIM", "BaselinePP", "Learner", "MatchingNet", "MetaBaseline",
           "MetaOptNet", "ProtoMAML", "ProtoNet", "RelationNet", "Reptile", "SimpleShot", "Task",
           "TransferLearner", "task_batch_norm"]
